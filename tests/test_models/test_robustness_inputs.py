"""Images of any size through the three tasks, and a wrong channel count named.

Sizes: smaller than one 16x16 patch, very wide, very tall, and odd. The backbone zero-pads to
whole patches, so each works; each task's model predicts and computes a loss on them.
"""
import pytest
import torch
from helpers import load_tool, toy_cls_options
from mmengine.config import Config
from mmengine.registry import init_default_scope

SIZES = [(8, 8), (17, 300), (300, 17), (33, 47)]  # (H, W)
SMALL = dict(inner_dim=12, inner_heads=2, outer_dim=48, outer_heads=3, depth=4)


def build(path: str, scope: str, **backbone):
    import importlib
    cfg = Config.fromfile(path)
    cfg.model.backbone.update(arch=SMALL, init_cfg=None, **backbone)
    init_default_scope(scope)
    registry = importlib.import_module(f'{scope}.registry').MODELS
    return cfg, registry


def classifier():
    cfg, models = build('configs/demo/cls_shapes.py', 'mmpretrain')
    cfg.model.head.in_channels = SMALL['outer_dim']
    return models.build(cfg.model)


def detector():
    cfg, models = build('configs/faster_rcnn_tnt_ti_fpn.py', 'mmdet', out_indices=(0, 1, 2, 3))
    cfg.model.neck.in_channels = [SMALL['outer_dim']] * 4
    return models.build(cfg.model)


def segmentor():
    cfg, models = build('configs/upernet_tnt_s_ade20k.py', 'mmseg', out_indices=(0, 1, 2, 3))
    cfg.model.decode_head.in_channels = [SMALL['outer_dim']] * 4
    cfg.model.auxiliary_head.in_channels = SMALL['outer_dim']
    # the model at the image's own size, not padded to the 512x512 training crop
    cfg.model.data_preprocessor.update(size=None, size_divisor=1)
    return models.build(cfg.model)


def cls_batch(height, width, channels=3):
    from mmpretrain.structures import DataSample
    return dict(inputs=[torch.randint(0, 256, (channels, height, width), dtype=torch.uint8)],
                data_samples=[DataSample().set_gt_label(1)])


def det_batch(height, width, channels=3):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    sample = DetDataSample(metainfo=dict(img_shape=(height, width), ori_shape=(height, width),
                                         scale_factor=(1.0, 1.0), pad_shape=(height, width)))
    box = [0.0, 0.0, max(2.0, width / 2), max(2.0, height / 2)]
    sample.gt_instances = InstanceData(bboxes=torch.tensor([box]), labels=torch.tensor([1]))
    return dict(inputs=[torch.randint(0, 256, (channels, height, width), dtype=torch.uint8)],
                data_samples=[sample])


def seg_batch(height, width, channels=3):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    sample = SegDataSample(metainfo=dict(img_shape=(height, width), ori_shape=(height, width),
                                         pad_shape=(height, width)))
    sample.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, height, width)))
    return dict(inputs=[torch.randint(0, 256, (channels, height, width), dtype=torch.uint8)],
                data_samples=[sample])


TASKS = {'classification': (classifier, cls_batch), 'detection': (detector, det_batch),
         'segmentation': (segmentor, seg_batch)}


@pytest.mark.parametrize('task', TASKS)
def test_any_size_trains_and_predicts(task):
    make_model, make_batch = TASKS[task]
    torch.manual_seed(0)
    model = make_model()
    for height, width in SIZES:
        # two images: UperNet's pooling module normalises 1x1 maps with BatchNorm, which
        # needs more than one value per channel in training (whatever the image size)
        one, two = make_batch(height, width), make_batch(height, width)
        batch = {key: one[key] + two[key] for key in one}
        model.train()
        data = model.data_preprocessor(batch, True)
        loss, _ = model.parse_losses(model(**data, mode='loss'))
        assert torch.isfinite(loss), (task, height, width)
        model.eval()
        with torch.no_grad():
            results = model(**model.data_preprocessor(batch, False), mode='predict')
        assert len(results) == 2
        if task == 'segmentation':
            assert results[0].pred_sem_seg.shape == (height, width), (height, width)


@pytest.mark.parametrize('task', TASKS)
def test_wrong_channel_count_is_named(task):
    """A 4-channel image (RGBA read with color_type='unchanged'). Each task's data
    preprocessor would meet it before the backbone and fail unclearly (or, with one channel,
    repeat it silently); the tools' CheckInputHook names the expected and received counts."""
    from types import SimpleNamespace

    from tnt_mm.engine import CheckInputHook
    make_model, make_batch = TASKS[task]
    runner = SimpleNamespace(model=make_model())
    batch = make_batch(32, 32, channels=4)
    batch['data_samples'][0].set_metainfo(dict(img_path='data/rgba.png'))
    with pytest.raises(ValueError, match=r'test batch 5, image 0 \(data/rgba.png\): 4 channels, '
                                         r'but the model takes 3-channel images'):
        CheckInputHook().before_test_iter(runner, 5, batch)
    CheckInputHook().before_train_iter(runner, 0, make_batch(32, 32))  # 3 channels pass


def test_rgba_dataset_named_by_the_train_tool(tmp_path):
    """RGBA files read with color_type='unchanged' through tools/train.py: the first batch
    stops with the file's path and both counts."""
    from PIL import Image
    make_shapes = load_tool('tools/data/make_shapes.py')
    train = load_tool('tools/train.py')
    data = tmp_path / 'shapes'
    make_shapes.main(['imagenet', str(data), '--num-train', '12', '--num-val', '6', '--size',
                      '16'])
    for path in (data / 'train').rglob('*.png'):
        Image.open(path).convert('RGBA').save(path)
    with pytest.raises(ValueError, match=r'train batch 0, image 0 \(.*\.png\): 4 channels, but '
                                         r'the model takes 3-channel images'):
        train.main(['configs/demo/cls_shapes.py', '--work-dir', str(tmp_path / 'work'),
                    '--cfg-options', *toy_cls_options(str(data)),
                    'train_dataloader.dataset.pipeline.0.color_type=unchanged'])
