"""tnt_mm.detection_ops: torchvision's nms and roi_align, put behind mmcv's ``ext_module``,
give what mmcv's own kernels give on the CPU (``TNT_MM_DETECTION_OPS=torchvision`` against
``=mmcv``), down to the losses of the detection demos trained a few iterations."""
import subprocess
import sys

import mmcv.ops
import numpy as np
import pytest
import torch
from helpers import load_tool
from mmdet.structures.mask import BitmapMasks, mask_target
from mmengine.config import ConfigDict

from tnt_mm import detection_ops
from tnt_mm.utils.config import load_config
from tnt_mm.utils.dist import build_runner

ENV_VAR = detection_ops.ENV_VAR


def on_kernel(monkeypatch, kernel: str, op, *args, **kwargs):
    """``op(*args, **kwargs)`` with ``TNT_MM_DETECTION_OPS=kernel``; checks that the kernel
    asked for is the one that ran."""
    monkeypatch.setenv(ENV_VAR, kernel)
    detection_ops._chosen.clear()
    result = op(*args, **kwargs)
    assert set(detection_ops.chosen_kernels().values()) == {kernel}
    return result


def random_boxes(gen, count: int, size: float = 100., integer: bool = False) -> torch.Tensor:
    corners = torch.rand(count, 2, generator=gen) * size
    sides = torch.rand(count, 2, generator=gen) * size / 3 + 1
    boxes = torch.cat([corners, corners + sides], dim=1)
    return boxes.round() if integer else boxes


# ---- roi_align ----

def rois_on_two_images(gen, spatial_scale: float, feature_size) -> torch.Tensor:
    """Rois in image coordinates over 2 images: inside, across the border, and below a pixel
    of the feature map (where aligned=False rounds the size up to 1)."""
    height, width = (s / spatial_scale for s in feature_size)
    x1 = torch.rand(12, generator=gen) * width * 1.1 - width * 0.1
    y1 = torch.rand(12, generator=gen) * height * 1.1 - height * 0.1
    w = torch.rand(12, generator=gen) * width / 2
    h = torch.rand(12, generator=gen) * height / 2
    w[:3] *= 0.02  # under a feature pixel
    image = torch.arange(12) % 2
    return torch.stack([image.float(), x1, y1, x1 + w, y1 + h], dim=1)


def roi_align_and_grad(features, rois, output_size, spatial_scale, sampling_ratio, aligned):
    features = features.clone().requires_grad_()
    out = mmcv.ops.roi_align(features, rois, output_size, spatial_scale, sampling_ratio, 'avg',
                             aligned)
    weights = torch.linspace(-1, 1, out.numel()).view_as(out)  # every output counts differently
    (out * weights).sum().backward()
    return out.detach(), features.grad


@pytest.mark.parametrize('aligned', [True, False])
@pytest.mark.parametrize('sampling_ratio', [0, 2])
@pytest.mark.parametrize('spatial_scale', [1 / 4, 1 / 16])
@pytest.mark.parametrize('output_size', [7, 14])
def test_roi_align_forward_and_backward_equal_mmcv(monkeypatch, aligned, sampling_ratio,
                                                   spatial_scale, output_size):
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(2, 3, 20, 24, generator=gen)
    rois = rois_on_two_images(gen, spatial_scale, (20, 24))
    args = (features, rois, output_size, spatial_scale, sampling_ratio, aligned)
    out_mmcv, grad_mmcv = on_kernel(monkeypatch, 'mmcv', roi_align_and_grad, *args)
    out_tv, grad_tv = on_kernel(monkeypatch, 'torchvision', roi_align_and_grad, *args)
    assert out_tv.abs().max() > 0.1 and grad_tv.abs().max() > 0.1
    torch.testing.assert_close(out_tv, out_mmcv, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_tv, grad_mmcv, rtol=1e-5, atol=1e-5)


def test_roi_align_torchvision_gradient_is_the_true_one(monkeypatch):
    """Independently of mmcv: the torchvision path's backward passes gradcheck (float64)."""
    monkeypatch.setenv(ENV_VAR, 'torchvision')
    gen = torch.Generator().manual_seed(1)
    features = torch.randn(2, 2, 6, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = rois_on_two_images(gen, 1 / 4, (6, 7)).double()
    assert torch.autograd.gradcheck(
        lambda f: mmcv.ops.roi_align(f, rois, 3, 1 / 4, 2, 'avg', True), (features,))


def test_roi_align_max_pooling_has_no_torchvision_kernel(monkeypatch):
    features, rois = torch.randn(1, 2, 8, 8), torch.tensor([[0., 1., 1., 6., 6.]])
    assert mmcv.ops.roi_align(features, rois, 2, 1.0, 0, 'max', True).shape == (1, 2, 2, 2)
    monkeypatch.setenv(ENV_VAR, 'torchvision')
    with pytest.raises(ValueError, match="pool_mode='max' has no torchvision kernel.*'avg'"):
        mmcv.ops.roi_align(features, rois, 2, 1.0, 0, 'max', True)


def test_roi_align_module_goes_through_the_proxy(monkeypatch):
    """mmdet's RoI extractors build mmcv's RoIAlign module."""
    layer = mmcv.ops.RoIAlign(7, spatial_scale=1 / 4, sampling_ratio=0)
    features, rois = torch.randn(1, 4, 16, 16), torch.tensor([[0., 4., 8., 40., 50.]])
    out_mmcv = on_kernel(monkeypatch, 'mmcv', layer, features, rois)
    out_tv = on_kernel(monkeypatch, 'torchvision', layer, features, rois)
    torch.testing.assert_close(out_tv, out_mmcv, rtol=1e-5, atol=1e-5)


# ---- nms ----

@pytest.mark.parametrize('offset', [0, 1])
def test_nms_keeps_the_same_indices_in_the_same_order(monkeypatch, offset):
    gen = torch.Generator().manual_seed(0)
    boxes = random_boxes(gen, 300, integer=True)
    scores = torch.randint(0, 6, (300,), generator=gen).float() / 5  # many exact ties
    for iou in (0.3, 0.5, 0.7):
        _, keep_mmcv = on_kernel(monkeypatch, 'mmcv', mmcv.ops.nms, boxes, scores, iou, offset)
        _, keep_tv = on_kernel(monkeypatch, 'torchvision', mmcv.ops.nms, boxes, scores, iou,
                               offset)
        assert 20 < len(keep_tv) < 300
        assert torch.equal(keep_tv, keep_mmcv), iou


def test_nms_offset_is_emulated(monkeypatch):
    """Two boxes that touch: IoU 0 as (x2 - x1) boxes, 3/15 as legacy boxes (x2 - x1 + 1
    pixels: 3x3 each, a column of 3 shared). Threshold 0.1 separates the two."""
    boxes, scores = torch.tensor([[0., 0., 2., 2.], [2., 0., 4., 2.]]), torch.tensor([.9, .8])
    for offset, kept in ((0, [0, 1]), (1, [0])):
        _, keep_mmcv = on_kernel(monkeypatch, 'mmcv', mmcv.ops.nms, boxes, scores, 0.1, offset)
        _, keep_tv = on_kernel(monkeypatch, 'torchvision', mmcv.ops.nms, boxes, scores, 0.1,
                               offset)
        assert keep_mmcv.tolist() == keep_tv.tolist() == kept


def test_nms_breaks_score_ties_as_mmcv(monkeypatch):
    """8 separate boxes, each 8 times with one score: mmcv keeps the copy that comes first
    in its ``scores.sort(0, descending=True)``, which is not stable on the CPU: not always
    the first copy, as a stable sort would keep."""
    corners = torch.arange(8.).repeat_interleave(2).view(8, 2) * 20
    boxes = torch.cat([corners, corners + 10], dim=1).repeat(8, 1)  # copies at i, i + 8, ...
    scores = torch.tensor([0.9, 0.5, 0.5, 0.7, 0.5, 0.9, 0.7, 0.5]).repeat(8)
    _, keep_mmcv = on_kernel(monkeypatch, 'mmcv', mmcv.ops.nms, boxes, scores, 0.5)
    _, keep_tv = on_kernel(monkeypatch, 'torchvision', mmcv.ops.nms, boxes, scores, 0.5)
    assert keep_tv.tolist() == keep_mmcv.tolist()
    assert sorted(keep_tv % 8) == list(range(8))  # one copy of each box
    assert sorted(keep_tv) != list(range(8))  # not all first copies


def test_nms_score_threshold_max_num_and_empty(monkeypatch):
    gen = torch.Generator().manual_seed(2)
    boxes, scores = random_boxes(gen, 100), torch.rand(100, generator=gen)
    for kwargs in (dict(score_threshold=0.3), dict(max_num=5)):
        dets_mmcv, keep_mmcv = on_kernel(monkeypatch, 'mmcv', mmcv.ops.nms, boxes, scores, 0.5,
                                         **kwargs)
        dets_tv, keep_tv = on_kernel(monkeypatch, 'torchvision', mmcv.ops.nms, boxes, scores,
                                     0.5, **kwargs)
        assert torch.equal(keep_tv, keep_mmcv) and torch.equal(dets_tv, dets_mmcv)
    _, keep = on_kernel(monkeypatch, 'torchvision', mmcv.ops.nms, torch.zeros(0, 4),
                        torch.zeros(0), 0.5)
    assert keep.shape == (0,) and keep.dtype == torch.long


@pytest.mark.parametrize('nms_cfg', [
    dict(iou_threshold=0.5),
    dict(iou_threshold=0.5, class_agnostic=True),
    dict(iou_threshold=0.5, split_thr=50),  # the large-count path: nms per class
    dict(iou_threshold=0.6, split_thr=50, max_num=40),
])
def test_batched_nms_equals_mmcv(monkeypatch, nms_cfg):
    gen = torch.Generator().manual_seed(3)
    boxes = random_boxes(gen, 400, integer=True)
    scores = torch.randint(0, 20, (400,), generator=gen).float() / 20
    classes = torch.randint(0, 4, (400,), generator=gen)
    dets_mmcv, keep_mmcv = on_kernel(monkeypatch, 'mmcv', mmcv.ops.batched_nms, boxes, scores,
                                     classes, nms_cfg)
    dets_tv, keep_tv = on_kernel(monkeypatch, 'torchvision', mmcv.ops.batched_nms, boxes,
                                 scores, classes, nms_cfg)
    assert 30 < len(keep_tv) < 380
    assert torch.equal(keep_tv, keep_mmcv) and torch.equal(dets_tv, dets_mmcv)


# ---- mask targets (mmdet's BitmapMasks.crop_and_resize -> mmcv's roi_align) ----

def test_mask_targets_equal_mmcv(monkeypatch):
    rng = np.random.default_rng(0)
    gen = torch.Generator().manual_seed(0)
    proposals, gt_inds, gt_masks = [], [], []
    for height, width in ((48, 64), (40, 40)):
        gt_masks.append(BitmapMasks(rng.random((3, height, width)) > 0.5, height, width))
        proposals.append(random_boxes(gen, 10, size=min(height, width)))
        gt_inds.append(torch.randint(0, 3, (10,), generator=gen))
    cfg = ConfigDict(mask_size=28)
    targets_mmcv = on_kernel(monkeypatch, 'mmcv', mask_target, proposals, gt_inds, gt_masks,
                             cfg)
    targets_tv = on_kernel(monkeypatch, 'torchvision', mask_target, proposals, gt_inds,
                           gt_masks, cfg)
    assert targets_tv.shape == (20, 28, 28) and 0.2 < targets_tv.mean() < 0.8
    assert torch.equal(targets_tv, targets_mmcv)


# ---- the choice of kernel ----

def test_auto_uses_mmcv_kernels_on_the_cpu(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    detection_ops._chosen.clear()
    mmcv.ops.nms(random_boxes(torch.Generator().manual_seed(0), 10), torch.rand(10), 0.5)
    roi_align_and_grad(torch.randn(1, 2, 8, 8), torch.tensor([[0., 1., 1., 6., 6.]]), 2, 1.0,
                       0, True)
    assert detection_ops.chosen_kernels() == {('nms', 'cpu'): 'mmcv',
                                              ('roi_align', 'cpu'): 'mmcv'}


def test_auto_uses_torchvision_where_mmcv_has_no_kernel(monkeypatch):
    """mmcv has no kernels for the meta device (no data, shapes only), as a CPU-only mmcv has
    none for CUDA: the probe meets mmcv's 'implementation for device meta not found'."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setattr(detection_ops, '_mmcv_has', {})
    detection_ops._chosen.clear()
    features = torch.empty(2, 3, 16, 16, device='meta')
    rois = torch.empty(5, 5, device='meta')
    assert mmcv.ops.roi_align(features, rois, 7, 1 / 4, 0, 'avg', True).shape == (5, 3, 7, 7)
    assert detection_ops.chosen_kernels() == {('roi_align', 'meta'): 'torchvision'}
    assert detection_ops._mmcv_has == {('roi_align', 'meta'): False}
    monkeypatch.setenv(ENV_VAR, 'mmcv')
    with pytest.raises(RuntimeError, match='implementation for device meta not found'):
        mmcv.ops.roi_align(features, rois, 7, 1 / 4, 0, 'avg', True)


def test_a_bad_choice_names_the_accepted_ones(monkeypatch):
    monkeypatch.setenv(ENV_VAR, 'cuda')
    with pytest.raises(ValueError, match=r"TNT_MM_DETECTION_OPS='cuda' .*'auto', 'mmcv', "
                                         r"'torchvision'"):
        mmcv.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)


# ---- what importing tnt_mm rebinds ----

def ext_modules():
    return [sys.modules[name].ext_module for name in detection_ops.PATCHED_MODULES]


def test_import_rebinds_the_two_ext_modules_and_uninstall_restores_them():
    real = sys.modules['mmcv._ext']
    try:
        assert all(isinstance(ext, detection_ops.ExtensionProxy) and ext.real is real
                   for ext in ext_modules())
        assert ext_modules()[0].nms_match is real.nms_match  # the other names pass through
        detection_ops.uninstall()
        assert ext_modules() == [real, real]
        detection_ops.install()
        detection_ops.install()  # twice: still one proxy over the extension
        assert all(ext.real is real for ext in ext_modules())
    finally:
        detection_ops.install()


@pytest.mark.parametrize('mmcv', ['absent', 'without compiled ops'])
def test_import_works_without_mmcv_ops(tmp_path, mmcv):
    """The core install has no mmcv; mmcv-lite has no ``_ext``. ``import tnt_mm`` then neither
    fails nor imports mmcv (this one fails to import). mmseg, which imports mmcv, is hidden."""
    (tmp_path / 'mmcv').mkdir()
    (tmp_path / 'mmcv' / '__init__.py').write_text('raise ImportError("imported mmcv")\n')
    hide = "sys.modules['mmcv'] = None; " if mmcv == 'absent' else ''
    code = (f"import sys; sys.path.insert(0, {str(tmp_path)!r}); {hide}"
            "sys.modules['mmseg'] = None; import tnt_mm; "
            "print(tnt_mm.detection_ops.mmcv_ops_installed(), sys.modules.get('mmcv'))")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ['False', 'None']


# ---- the detection demos trained a few iterations on either kernel ----

LOSSES = ('loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox', 'acc', 'loss_mask')


@pytest.fixture(scope='module')
def shapes_coco(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp('shapes') / 'coco')
    load_tool('tools/data/make_shapes.py').main(
        ['coco', root, '--num-train', '6', '--num-val', '2', '--size', '96'])
    return root


@pytest.fixture
def restore_determinism():
    """mmengine's randomness=dict(deterministic=True) switches torch's flag process-wide."""
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


def demo_losses(monkeypatch, config: str, data_root: str, work_dir: str, kernel: str) -> dict:
    """The losses of 3 iterations of ``config`` (batch 2, constant learning rate, seed 0) on
    ``kernel``'s nms and roi_align, by name."""
    monkeypatch.setenv(ENV_VAR, kernel)
    detection_ops._chosen.clear()
    cfg = load_config(config, {'train_dataloader.dataset.data_root': data_root,
                               'train_dataloader.batch_size': 2,
                               'train_dataloader.num_workers': 0,
                               'train_dataloader.persistent_workers': False}, work_dir)
    cfg.train_cfg = dict(by_epoch=False, max_iters=3)
    cfg.param_scheduler = None
    for key in ('val_cfg', 'val_dataloader', 'val_evaluator', 'test_cfg', 'test_dataloader',
                'test_evaluator'):
        cfg[key] = None
    cfg.default_hooks.checkpoint = None
    cfg.randomness = dict(seed=0, deterministic=True)
    cfg.experiment_name = f'detection_ops_{kernel}'  # its own MessageHub
    runner = build_runner(cfg)
    runner.train()
    assert detection_ops.chosen_kernels() == {('nms', 'cpu'): kernel,
                                              ('roi_align', 'cpu'): kernel}
    scalars = runner.message_hub.log_scalars
    return {name: scalars[f'train/{name}'].data[0] for name in LOSSES
            if f'train/{name}' in scalars}


@pytest.mark.slow
@pytest.mark.parametrize('config, heads', [
    ('configs/demo/det_shapes.py', 5),
    ('configs/demo/mask_shapes.py', 6),
])
def test_demo_losses_equal_on_either_kernel(monkeypatch, restore_determinism, shapes_coco,
                                            tmp_path, config, heads):
    losses_mmcv = demo_losses(monkeypatch, config, shapes_coco, str(tmp_path / 'mmcv'), 'mmcv')
    losses_tv = demo_losses(monkeypatch, config, shapes_coco, str(tmp_path / 'tv'),
                            'torchvision')
    assert len(losses_tv) == heads and losses_tv.keys() == losses_mmcv.keys()
    for name, values in losses_mmcv.items():
        assert len(values) == 3, name
        np.testing.assert_allclose(losses_tv[name], values, rtol=1e-5, atol=1e-6, err_msg=name)
