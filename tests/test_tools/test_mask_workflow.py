"""Mask R-CNN at toy scale (configs/demo/mask_shapes.py, the heads of
configs/mask_rcnn_tnt_s_fpn.py): the generated COCO data with polygon masks ->
tools/train.py -> tools/test.py reports box and mask AP (mmdet's CocoMetric) -> mmdet's
DetInferencer returns masks."""
import os.path as osp

import pytest
import torch
from helpers import load_tool, train_toy_detector

test = load_tool('tools/test.py')

pytestmark = pytest.mark.slow  # trains through tools/train.py

CONFIG = 'configs/demo/mask_shapes.py'


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    return train_toy_detector(CONFIG, tmp_path_factory.mktemp('mask'))


def test_the_mask_head_trained(trained):
    work_dir, _, _ = trained
    state = torch.load(osp.join(work_dir, 'epoch_2.pth'), weights_only=True)['state_dict']
    assert 'roi_head.mask_head.conv_logits.weight' in state


def test_test_tool_reports_box_and_mask_ap(trained, tmp_path):
    work_dir, _, options = trained
    metrics = test.main([CONFIG, osp.join(work_dir, 'epoch_2.pth'), '--work-dir',
                         str(tmp_path), '--cfg-options', *options])
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP', 'coco/segm_mAP_50'):
        assert key in metrics, sorted(metrics)
        assert -1.0 <= metrics[key] <= 1.0


def test_det_inferencer_returns_masks(trained):
    from mmdet.apis import DetInferencer
    work_dir, data, _ = trained
    inferencer = DetInferencer(model=CONFIG, weights=osp.join(work_dir, 'epoch_2.pth'),
                               device='cpu', show_progress=False)
    image = osp.join(data, 'val2017', '000001.png')
    result = inferencer(image, return_datasamples=True)['predictions'][0]
    masks = result.pred_instances.masks
    assert masks.dtype == torch.bool and masks.shape[-2:] == (96, 128)
    assert masks.shape[0] == result.pred_instances.bboxes.shape[0]
