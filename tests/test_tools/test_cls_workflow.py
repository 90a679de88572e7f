"""The classification workflow at toy scale: data -> train -> safe checkpoint -> test ->
resume -> the checkpoint initialises a detection backbone (the pretrain-to-dense-task chain)."""
import glob
import os.path as osp

import numpy as np
import pytest
import torch
from helpers import load_tool
from mmengine.config import Config
from PIL import Image

make_shapes = load_tool('tools/data/make_shapes.py')
train = load_tool('tools/train.py')
test = load_tool('tools/test.py')
visualize = load_tool('tools/visualize_attention.py')
classify_images = load_tool('tools/demo/classify_images.py')

pytestmark = pytest.mark.slow  # trains through tools/train.py

# two epochs: the demo's schedule warms up for one
TOY = ['train_cfg.max_epochs=2', 'train_cfg.val_interval=1', 'train_dataloader.num_workers=0',
       'val_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
       'val_dataloader.persistent_workers=False', 'train_dataloader.batch_size=12',
       'default_hooks.checkpoint.interval=1', 'default_hooks.checkpoint.max_keep_ckpts=3',
       'param_scheduler.0.end=1', 'param_scheduler.1.begin=1']


@pytest.fixture(scope='module')
def trained(tmp_path_factory, toy_cls_data):
    root = tmp_path_factory.mktemp('cls')
    data = toy_cls_data
    options = TOY + [f'train_dataloader.dataset.data_root={data}',
                     f'val_dataloader.dataset.data_root={data}',
                     f'test_dataloader.dataset.data_root={data}',
                     'model.backbone.pretrain_img_size=32']
    work_dir = str(root / 'work')
    train.main(['configs/demo/cls_shapes.py', '--work-dir', work_dir, '--cfg-options', *options])
    return work_dir, options


def test_checkpoint_loads_with_weights_only(trained):
    work_dir, _ = trained
    checkpoint = torch.load(osp.join(work_dir, 'epoch_2.pth'), weights_only=True)
    assert {'state_dict', 'message_hub', 'optimizer', 'meta'} <= set(checkpoint)
    assert checkpoint['meta']['epoch'] == 2


def test_test_tool_reports_accuracy(trained, tmp_path):
    work_dir, options = trained
    out = str(tmp_path / 'preds.pkl')
    metrics = test.main(['configs/demo/cls_shapes.py', osp.join(work_dir, 'epoch_2.pth'),
                         '--work-dir', str(tmp_path), '--out', out, '--cfg-options', *options])
    assert 0.0 <= metrics['accuracy/top1'] <= 100.0 and 'accuracy/top3' in metrics
    assert osp.isfile(out) and not osp.exists(str(tmp_path / 'preds.partial.pkl'))


def test_summary_picture_marks_true_and_predicted_classes(trained, toy_cls_data, tmp_path,
                                                          capsys):
    work_dir, _ = trained
    images = sorted(glob.glob(osp.join(toy_cls_data, 'val', '*', '*.png')))[:8]
    out = str(tmp_path / 'summary.png')
    results = classify_images.main(['configs/demo/cls_shapes.py',
                                    osp.join(work_dir, 'epoch_2.pth'), *images, '--out', out])
    assert len(results) == 8
    picture = Image.open(out)
    # 4 x 2 tiles of 32 px images enlarged 8x to 256, captions below, title above
    assert picture.width >= 4 * 256 and picture.height >= 2 * 256
    wrong = sum(r['pred_class'] != osp.basename(osp.dirname(p)) for r, p in zip(results, images))
    assert f'{wrong} of 8 misclassified' in capsys.readouterr().out
    assert not osp.exists(out + '.partial.png')


def test_resume_continues(trained):
    work_dir, options = trained
    train.main(['configs/demo/cls_shapes.py', '--work-dir', work_dir, '--resume',
                '--cfg-options', *options, 'train_cfg.max_epochs=3'])
    first = torch.load(osp.join(work_dir, 'epoch_2.pth'), weights_only=True)
    second = torch.load(osp.join(work_dir, 'epoch_3.pth'), weights_only=True)
    iters_per_epoch = first['meta']['iter'] // 2
    assert second['meta']['epoch'] == 3 and second['meta']['iter'] == 3 * iters_per_epoch
    # the message hub's history came back through the safe format and went on growing
    buffers = second['message_hub']['log_scalars']
    assert len(buffers['train/loss']['log']) > len(first['message_hub']['log_scalars']
                                                   ['train/loss']['log'])


def test_classifier_checkpoint_initialises_a_detector(trained):
    """The chain config (configs/demo/det_shapes_chain.py) starts the detection demo from a
    trained classifier: the position embedding is resampled (2x2 grid at 32 px -> 6x8), the
    pyramid is new, the head is left out."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    work_dir, _ = trained
    checkpoint = osp.join(work_dir, 'epoch_2.pth')
    cfg = Config.fromfile('configs/demo/det_shapes_chain.py')
    assert cfg.model.backbone.init_cfg.checkpoint == 'work_dirs/demo_cls/epoch_12.pth'
    # the classification demo trains the same backbone that the detection demo builds
    cls_cfg = Config.fromfile('configs/demo/cls_shapes.py')
    assert cfg.model.backbone.arch == cls_cfg.model.backbone.arch
    cfg.model.backbone.init_cfg.checkpoint = checkpoint
    detector = MODELS.build(cfg.model)
    detector.init_weights()
    trained_state = torch.load(checkpoint, weights_only=True)['state_dict']
    assert torch.equal(detector.backbone.blocks[5].mlp.fc1.weight,  # the last block
                       trained_state['backbone.blocks.5.mlp.fc1.weight'])
    assert detector.backbone.patch_pos.shape == (1, 1 + 6 * 8, 192)
    detector.eval()
    with torch.no_grad():
        feats = detector.extract_feat(torch.randn(1, 3, 96, 128))
    assert [tuple(f.shape[-2:]) for f in feats] == [(24, 32), (12, 16), (6, 8), (3, 4), (2, 2)]


def test_attention_pictures(trained, tmp_path):
    from PIL import Image
    work_dir, options = trained
    image = tmp_path / 'card.png'
    make_shapes.textured_background(np.random.default_rng(1), 48, 80).save(image)
    written = visualize.main(['configs/demo/cls_shapes.py', osp.join(work_dir, 'epoch_2.pth'),
                              str(image), '--out-dir', str(tmp_path / 'vis'), '--blocks', '1',
                              '6', '--cfg-options', 'model.backbone.pretrain_img_size=32'])
    assert [osp.basename(p) for p in written] == ['inner_attention.png', 'outer_attention.png',
                                                  'cls_attention.png']
    for path in written:
        width, height = Image.open(path).size
        assert width >= 200 and height >= 200, (path, width, height)
        assert osp.getsize(path) > 5000  # a real picture, not an empty canvas


def test_mmpretrain_apis(trained, tmp_path):
    from mmpretrain.apis import ImageClassificationInferencer, get_model
    work_dir, _ = trained
    model = get_model('configs/demo/cls_shapes.py', pretrained=osp.join(work_dir, 'epoch_2.pth'),
                      backbone=dict(pretrain_img_size=32))
    image = tmp_path / 'card.png'
    make_shapes.textured_background(np.random.default_rng(2), 64, 64).save(image)
    (result,) = ImageClassificationInferencer(model)(str(image))
    assert result['pred_class'] in make_shapes.CLASSES
    assert 0.0 <= result['pred_score'] <= 1.0
