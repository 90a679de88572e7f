"""Which kernels compute mmcv's ``nms`` and ``roi_align``: mmcv's own, or torchvision's.

Why: an mmcv built where no GPU was visible has CPU kernels only, and the first Faster R-CNN
step on ``cuda:0`` fails with ``nms_impl: implementation for device cuda:0 not found``. The
detection configs use two of mmcv's compiled kernels, ``nms`` and ``roi_align``, and
torchvision's wheel has CPU and CUDA kernels for both.

What: :func:`install` rebinds two names and nothing else: ``ext_module`` in ``mmcv.ops.nms``
and ``ext_module`` in ``mmcv.ops.roi_align`` (mmcv's compiled ``_ext``, which both modules look
up at every call). The stand-in sends ``nms``, ``roi_align_forward`` and ``roi_align_backward``
to the chosen kernel and every other name to the real extension. That reaches every caller:
``mmcv.ops.nms``, ``batched_nms`` (mmdet's RPN and ``multiclass_nms``), ``RoIAlign`` (mmdet's
RoI extractors) and ``roi_align`` (the mask targets, ``BitmapMasks.crop_and_resize``).

``TNT_MM_DETECTION_OPS``, read at every call, chooses:

- ``auto`` (default): mmcv's kernel where mmcv has one for the tensor's device type (always on
  the CPU; elsewhere asked once per device type), torchvision's otherwise;
- ``mmcv``: mmcv's kernels always (mmcv's own behaviour, failing where it has none);
- ``torchvision``: torchvision's on every device (so the CPU tests can compare the two).

The first use of each (op, device type) logs the kernel chosen; :func:`chosen_kernels` tells.
torchvision's kernels give mmcv's results: ``nms`` keeps the same indices in the same order,
score ties included, and emulates ``offset=1``; ``roi_align`` pools by average only, so
``pool_mode='max'`` raises there.

This is the one place where importing tnt_mm changes another library's behaviour, and under
``auto`` only where mmcv has no kernel. ``import tnt_mm`` calls :func:`install`, which imports
``mmcv.ops`` where mmcv has its compiled ops, and does nothing without them (mmcv is optional:
it comes with mmdet). :func:`uninstall` restores mmcv's extension.
"""
import importlib
import importlib.machinery
import importlib.util
import os
import sys
from typing import Dict, Tuple

import torch
import torchvision  # noqa: F401  (registers torch.ops.torchvision)
from mmengine.logging import print_log

ENV_VAR = 'TNT_MM_DETECTION_OPS'
CHOICES = ('auto', 'mmcv', 'torchvision')
PATCHED_MODULES = ('mmcv.ops.nms', 'mmcv.ops.roi_align')
POOL_MODES = ('max', 'avg')  # mmcv's pool_mode argument as its kernels get it: 0 and 1

_mmcv_has: Dict[Tuple[str, str], bool] = {}  # (op, device type) -> mmcv has a kernel there
_chosen: Dict[Tuple[str, str], str] = {}  # (op, device type) -> the kernel last used there


def requested() -> str:
    """The value of ``TNT_MM_DETECTION_OPS`` (``auto`` when unset)."""
    value = os.environ.get(ENV_VAR, 'auto').strip().lower()
    if value not in CHOICES:
        raise ValueError(f'{ENV_VAR}={os.environ[ENV_VAR]!r} is not a choice of detection '
                         f'kernels; choose one of {CHOICES}')
    return value


def chosen_kernels() -> Dict[Tuple[str, str], str]:
    """``{(op, device type): 'mmcv' or 'torchvision'}`` for the ops run so far, op being
    ``'nms'`` or ``'roi_align'``."""
    return dict(_chosen)


def _probe_nms(ext, device: torch.device) -> None:
    ext.nms(torch.zeros(0, 4, device=device), torch.zeros(0, device=device),
            iou_threshold=0.5, offset=0)


def _probe_roi_align(ext, device: torch.device) -> None:
    features = torch.zeros(1, 1, 2, 2, device=device)
    rois = torch.tensor([[0., 0., 0., 1., 1.]], device=device)
    empty = features.new_zeros(0)
    ext.roi_align_forward(features, rois, features.new_zeros(1, 1, 1, 1), empty, empty,
                          aligned_height=1, aligned_width=1, spatial_scale=1.0,
                          sampling_ratio=0, pool_mode=1, aligned=True)


_PROBES = {'nms': _probe_nms, 'roi_align': _probe_roi_align}


def mmcv_has_kernel(ext, op: str, device: torch.device) -> bool:
    """Whether mmcv's extension computes ``op`` on this device type: one tiny call, cached."""
    key = (op, device.type)
    if key not in _mmcv_has:
        try:
            _PROBES[op](ext, device)
            _mmcv_has[key] = True
        except RuntimeError as error:  # mmcv's dispatcher: '<op>_impl: implementation for
            if 'implementation for device' not in str(error):  # device cuda:0 not found.'
                raise
            _mmcv_has[key] = False
    return _mmcv_has[key]


def choose(ext, op: str, device: torch.device) -> str:
    """The kernel that computes ``op`` on ``device`` now: ``'mmcv'`` or ``'torchvision'``."""
    asked = requested()
    choice = asked
    if asked == 'auto':
        has_kernel = device.type == 'cpu' or mmcv_has_kernel(ext, op, device)
        choice = 'mmcv' if has_kernel else 'torchvision'
    key = (op, device.type)
    if _chosen.get(key) != choice:
        _chosen[key] = choice
        why = f'{ENV_VAR}={asked}'
        if asked == 'auto' and choice == 'torchvision':
            why += f'; this mmcv has no {device.type} kernel'
        print_log(f"{op} on {device.type} tensors: {choice}'s kernel ({why})", logger='current')
    return choice


def torchvision_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float,
                    offset: int) -> torch.Tensor:
    """mmcv's ``nms`` by torchvision's kernel: the kept indices, in mmcv's order.

    mmcv's kernels (CPU and CUDA) order the boxes by ``scores.sort(0, descending=True)`` and
    return the kept ones in that order. That sort is not stable (on the CPU, tied scores
    beyond a few come out in no index order), so a stable sort would keep other boxes; the
    same call here orders ties as mmcv does on every device. torchvision then runs on the
    sorted boxes with strictly decreasing stand-in scores, so that its own sort cannot
    reorder them.
    """
    order = scores.sort(0, descending=True)[1]
    # float32 counts exactly to 2**24
    dtype = torch.float32 if len(order) <= 2**24 else torch.float64
    sorted_boxes = boxes[order].to(dtype)
    if offset:  # mmcv's legacy boxes span x2 - x1 + 1 pixels
        sorted_boxes = sorted_boxes + sorted_boxes.new_tensor([0, 0, 1, 1])
    ranks = torch.arange(len(order), 0, -1, dtype=dtype, device=boxes.device)
    # mmcv's kernels take the threshold as a float32: an IoU of exactly 0.3f is not > 0.3f
    threshold = torch.tensor(iou_threshold, dtype=torch.float32).item()
    keep = torch.ops.torchvision.nms(sorted_boxes, ranks, threshold)
    return order[keep]


def _check_avg_pooling(pool_mode: int) -> None:
    if POOL_MODES[pool_mode] != 'avg':
        raise ValueError(f"roi_align with pool_mode='{POOL_MODES[pool_mode]}' has no "
                         f"torchvision kernel: torchvision's roi_align supports "
                         f"pool_mode='avg' only. Use 'avg', or mmcv's kernel ({ENV_VAR}=mmcv "
                         f"with an mmcv built for this device)")


class ExtensionProxy:
    """Stands in for mmcv's ``_ext`` as ``ext_module`` of ``mmcv.ops.nms`` and
    ``mmcv.ops.roi_align``: the three ops go to the chosen kernel, every other name to
    ``real``. The signatures are those mmcv calls with."""

    def __init__(self, real):
        self.real = real

    def __getattr__(self, name: str):
        return getattr(self.real, name)

    def nms(self, boxes, scores, iou_threshold, offset):
        if choose(self.real, 'nms', boxes.device) == 'mmcv':
            return self.real.nms(boxes, scores, iou_threshold=iou_threshold, offset=offset)
        return torchvision_nms(boxes, scores, iou_threshold, offset)

    def roi_align_forward(self, input, rois, output, argmax_y, argmax_x, aligned_height,
                          aligned_width, spatial_scale, sampling_ratio, pool_mode, aligned):
        if choose(self.real, 'roi_align', input.device) == 'mmcv':
            return self.real.roi_align_forward(
                input, rois, output, argmax_y, argmax_x, aligned_height=aligned_height,
                aligned_width=aligned_width, spatial_scale=spatial_scale,
                sampling_ratio=sampling_ratio, pool_mode=pool_mode, aligned=aligned)
        _check_avg_pooling(pool_mode)
        # argmax_y and argmax_x serve max pooling only
        output.copy_(torch.ops.torchvision.roi_align(
            input, rois, spatial_scale, aligned_height, aligned_width, sampling_ratio,
            aligned))

    def roi_align_backward(self, grad_output, rois, argmax_y, argmax_x, grad_input,
                           aligned_height, aligned_width, spatial_scale, sampling_ratio,
                           pool_mode, aligned):
        if choose(self.real, 'roi_align', grad_output.device) == 'mmcv':
            return self.real.roi_align_backward(
                grad_output, rois, argmax_y, argmax_x, grad_input,
                aligned_height=aligned_height, aligned_width=aligned_width,
                spatial_scale=spatial_scale, sampling_ratio=sampling_ratio,
                pool_mode=pool_mode, aligned=aligned)
        _check_avg_pooling(pool_mode)
        batch_size, channels, height, width = grad_input.shape
        # mmcv's RoIAlignFunction.backward returns the zeros it passed in as grad_input
        grad_input.copy_(torch.ops.torchvision._roi_align_backward(
            grad_output, rois, spatial_scale, aligned_height, aligned_width, batch_size,
            channels, height, width, sampling_ratio, aligned))


def _rebind(module) -> None:
    ext = getattr(module, 'ext_module', None)
    if ext is not None and not isinstance(ext, ExtensionProxy):
        module.ext_module = ExtensionProxy(ext)


def mmcv_ops_installed() -> bool:
    """Whether mmcv is installed with its compiled ops (``mmcv._ext``), found without
    importing mmcv."""
    spec = importlib.util.find_spec('mmcv')
    if spec is None or spec.submodule_search_locations is None:
        return False
    found = importlib.machinery.PathFinder.find_spec('mmcv._ext', spec.submodule_search_locations)
    return found is not None


def install() -> None:
    """Rebind the two ``ext_module`` names. Imports mmcv.ops where mmcv has its compiled ops
    (a few hundredths of a second once tnt_mm's own imports are done); does nothing where it
    has not. Harmless when called again."""
    if not mmcv_ops_installed():
        return
    try:
        modules = [importlib.import_module(name) for name in PATCHED_MODULES]
    except ImportError:  # ops built for another torch: mmcv says so where it is used
        return
    for module in modules:
        _rebind(module)


def uninstall() -> None:
    """Give the two mmcv modules their extension back."""
    for name in PATCHED_MODULES:
        module = sys.modules.get(name)
        if module is not None and isinstance(module.ext_module, ExtensionProxy):
            module.ext_module = module.ext_module.real
