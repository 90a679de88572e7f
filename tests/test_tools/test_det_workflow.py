"""The detection demo at toy scale: synthetic COCO data -> tools/train.py -> tools/test.py
(COCO AP through mmdet's CocoMetric) -> tools/demo/detect_image.py (mmdet's DetInferencer)."""
import os.path as osp

import pytest
import torch
from helpers import load_tool, train_toy_detector
from PIL import Image

from tnt_mm.utils.cli import UsageError

make_shapes = load_tool('tools/data/make_shapes.py')
test = load_tool('tools/test.py')
detect_image = load_tool('tools/demo/detect_image.py')

pytestmark = pytest.mark.slow  # trains through tools/train.py

CONFIG = 'configs/demo/det_shapes.py'


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    return train_toy_detector(CONFIG, tmp_path_factory.mktemp('det'))


def test_training_writes_a_safe_checkpoint(trained):
    work_dir, _, _ = trained
    checkpoint = torch.load(osp.join(work_dir, 'epoch_2.pth'), weights_only=True)
    assert checkpoint['meta']['epoch'] == 2
    assert checkpoint['meta']['dataset_meta']['classes'] == make_shapes.CLASSES


def test_test_tool_reports_coco_ap(trained, tmp_path):
    work_dir, _, options = trained
    metrics = test.main([CONFIG, osp.join(work_dir, 'epoch_2.pth'), '--work-dir',
                         str(tmp_path), '--cfg-options', *options])
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_s', 'coco/bbox_mAP_l'):
        assert key in metrics, sorted(metrics)
        assert -1.0 <= metrics[key] <= 1.0  # COCO reports -1 for an empty size range


def test_detect_image_draws_predictions(trained, tmp_path):
    work_dir, data, _ = trained
    images = [osp.join(data, 'val2017', f'{i:06d}.png') for i in (1, 2, 3)]
    out = str(tmp_path / 'pred.png')
    result = detect_image.main([CONFIG, osp.join(work_dir, 'epoch_2.pth'), *images,
                                '--out', out, '--columns', '2', '--score-thr', '0.0'])
    assert len(result['predictions']) == 3
    width, height = Image.open(out).size
    # 2 columns x 2 rows of 96x128 images enlarged 3x (short side 288 >= 256), an 8 px gap,
    # 8 px margins; captions, title and legend below and above
    assert width == 2 * 384 + 8 + 16 and height > 2 * 288
    assert not osp.exists(out + '.partial.png')


def test_display_suppresses_duplicates_across_classes():
    """One object detected as two classes is drawn once, with the better class; boxes below
    the threshold are not drawn; separate objects all are."""
    prediction = dict(bboxes=[[10, 10, 50, 50], [12, 11, 51, 49], [60, 60, 90, 90],
                              [61, 61, 90, 90], [0, 0, 5, 5]],
                      scores=[0.6, 0.9, 0.8, 0.7, 0.2], labels=[0, 3, 1, 1, 2])
    boxes, labels, scores, above = detect_image.boxes_to_draw(prediction, 0.5, 0.5)
    assert above == 4 and labels == [3, 1] and scores == pytest.approx([0.9, 0.8])
    boxes, labels, scores, above = detect_image.boxes_to_draw(prediction, 0.5, 1.0)
    assert labels == [3, 1, 1, 0]  # --display-iou 1: everything above the threshold


def test_detect_image_names_missing_files(trained, tmp_path):
    work_dir, _, _ = trained
    with pytest.raises(UsageError, match='image .*x.png does not exist'):
        detect_image.main([CONFIG, osp.join(work_dir, 'epoch_2.pth'), str(tmp_path / 'x.png')])


def test_mmdet_inference_apis(trained):
    """The README's two-line inference: mmdet's init_detector + inference_detector."""
    from mmdet.apis import inference_detector, init_detector
    work_dir, data, _ = trained
    model = init_detector(CONFIG, osp.join(work_dir, 'epoch_2.pth'), device='cpu')
    image = osp.join(data, 'val2017', '000001.png')
    result = inference_detector(model, image)
    boxes = result.pred_instances.bboxes
    assert boxes.ndim == 2 and boxes.shape[1] == 4
    assert result.metainfo['ori_shape'] == (96, 128)
