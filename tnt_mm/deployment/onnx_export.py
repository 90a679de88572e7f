"""Export a tnt_mm model to ONNX and check the file against PyTorch in ONNX Runtime.

What is exported is a model's *tensor path*: the network from the normalised image batch to the
raw head outputs, before any post-processing, as mmdet's / mmseg's ``mode='tensor'``:

- classifier (mmpretrain): the logits, ``(B, num_classes)``;
- segmentor (mmseg): the decode head's logits, ``(B, num_classes, H / 4, W / 4)``;
- two-stage detector (mmdet Faster / Mask R-CNN): the FPN levels and the RPN's objectness and
  box deltas per level. The rest (proposals by NMS, RoIAlign, the box and mask heads) is left
  out: NMS and RoIAlign are mmcv ops, and mmcv 2.x has no ONNX export for them (it removed
  its ONNX symbolics; mmdeploy, which rewrote them, is unmaintained);
- ``part='backbone'``: the TNT feature pyramid alone (any detector or segmentor config).

The graph is taken by ``torch.export`` (``torch.onnx.export(dynamo=True)``). The backbone follows
shape-generic paths while exporting (``torch.compiler.is_exporting()``: always pad, always
resample the position embedding, pool odd grids by padding), so a ``dynamic`` file is right at
every size it accepts, not only at the sizes it was traced at. The fused CPU kernels never enter
the graph: the export runs the reference inner transformer.
"""
import copy
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from tnt_mm.ops import inner_backend

PARTS = ('model', 'backbone')
# torch.export specialises a size of 1 (broadcasting): a dynamic file takes H, W >= 33, where
# the patch grid (ceil(H / 16)) is at least 3 and the stride-32 level at least 2 wide.
MIN_DYNAMIC_SIZE = 33
MAX_DYNAMIC_SIZE = 8192
# Weights above this go to a side file (<out>.data): protobuf stops at 2 GB.
MAX_INLINE_BYTES = 1_800_000_000


class ExportError(ValueError):
    """A config, part or size this exporter cannot handle; the message says why."""


def _pooling_matrix(size: int, bins: int, like: torch.Tensor) -> torch.Tensor:
    """(bins, size): row i averages [floor(i * size / bins), ceil((i + 1) * size / bins)), the
    bins of ``adaptive_avg_pool``, built from tensor ops so that ``size`` stays symbolic."""
    index = torch.arange(bins, device=like.device)
    start = (index * size) // bins
    end = ((index + 1) * size + bins - 1) // bins
    position = torch.arange(size, device=like.device)
    inside = (position[None] >= start[:, None]) & (position[None] < end[:, None])
    return inside.to(like.dtype) / (end - start)[:, None].to(like.dtype)


class ExportableAdaptiveAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d`` for ONNX with dynamic sizes: the exporter turns the PyTorch
    operator into index gathers fixed at the traced size (wrong, or failing, at others; mmseg's
    PPM in UperNet uses it), so the bins are averaged by two matrix products instead."""

    def __init__(self, output_size) -> None:
        super().__init__()
        self.output_size = (output_size, output_size) if isinstance(output_size, int) \
            else tuple(output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        bins_h = self.output_size[0] or height
        bins_w = self.output_size[1] or width
        rows = _pooling_matrix(height, bins_h, x)  # (bins_h, H)
        cols = _pooling_matrix(width, bins_w, x)  # (bins_w, W)
        return rows @ x @ cols.transpose(0, 1)


def exportable(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with the layers whose ONNX export is fixed to one size replaced by
    shape-generic ones (the original is kept to verify the export against)."""
    module = copy.deepcopy(module)
    for name, child in list(module.named_modules()):
        if isinstance(child, nn.AdaptiveAvgPool2d):
            parent_name, _, attr = name.rpartition('.')
            parent = module.get_submodule(parent_name) if parent_name else module
            setattr(parent, attr, ExportableAdaptiveAvgPool2d(child.output_size))
    return module


class ClassifierTensorPath(nn.Module):
    """mmpretrain ``ImageClassifier``: image -> logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.output_names = ['logits']

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model(inputs, mode='tensor')


class SegmentorTensorPath(nn.Module):
    """mmseg ``EncoderDecoder``: image -> decode-head logits at stride 4 (the auxiliary head is
    a training-only loss)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.output_names = ['seg_logits']

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model._forward(inputs)


class TwoStageTensorPath(nn.Module):
    """mmdet two-stage detector: image -> FPN levels + the RPN head's raw outputs per level."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        levels = len(model.rpn_head.prior_generator.strides)
        self.output_names = ([f'fpn_{i}' for i in range(levels)]
                             + [f'rpn_cls_{i}' for i in range(levels)]
                             + [f'rpn_bbox_{i}' for i in range(levels)])

    def forward(self, inputs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        feats = self.model.extract_feat(inputs)
        cls_scores, bbox_preds = self.model.rpn_head(feats)
        return (*feats, *cls_scores, *bbox_preds)


class BackbonePath(nn.Module):
    """The TNT backbone alone: image -> its pyramid (or feature maps)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        if backbone.out_type == 'pyramid':
            self.output_names = [f'stride{int(16 / s)}' for s in backbone.pyramid.scale_factors]
        else:
            self.output_names = [f'block{i + 1}' for i in backbone.out_indices]

    def forward(self, inputs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return tuple(self.backbone(inputs))


def tensor_path(model: nn.Module, scope: str, part: str = 'model') -> nn.Module:
    """The module that is exported for a model built from a config of ``scope``."""
    if part not in PARTS:
        raise ExportError(f'part={part!r} is not one of {PARTS}')
    if part == 'backbone':
        backbone = getattr(model, 'backbone', None)
        if backbone is None or not hasattr(backbone, 'out_type'):
            raise ExportError(f'{type(model).__name__} has no TNT backbone to export')
        return BackbonePath(backbone)
    if scope == 'mmpretrain':
        return ClassifierTensorPath(model)
    if scope == 'mmseg':
        return SegmentorTensorPath(model)
    if scope == 'mmdet' and hasattr(model, 'rpn_head'):
        return TwoStageTensorPath(model)
    raise ExportError(
        f'{type(model).__name__} ({scope}) has no tensor path this exporter knows: classifiers, '
        f'segmentors and two-stage detectors are supported. DETR builds its attention masks '
        f'from each image\'s size in the data samples, which an exported graph cannot take; '
        f'export its backbone with part="backbone" (--part backbone)')


def build_from_config(config: str, checkpoint: Optional[str] = None,
                      part: str = 'model') -> Tuple[nn.Module, dict]:
    """Build the model of ``config`` (loading ``checkpoint`` strictly, if given) and return its
    tensor path in eval mode and the data preprocessor's normalisation (``mean``, ``std``,
    ``bgr_to_rgb``), which the exported graph expects to be applied to its input."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope, MODELS
    from mmengine.runner import load_checkpoint

    import tnt_mm  # noqa: F401  (registers the backbone)

    cfg = Config.fromfile(config)
    scope = cfg.get('default_scope', 'mmengine')
    model_cfg = cfg.model
    backbone = model_cfg.get('backbone', {})
    backbone.pop('init_cfg', None)  # the checkpoint gives all weights; no pretrained file needed
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(model_cfg)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
    # mmdet / mmseg configs put it in the model, mmpretrain's at the top level
    preprocessor = cfg.model.get('data_preprocessor') or cfg.get('data_preprocessor') or {}
    preprocess = {key: preprocessor.get(key) for key in ('mean', 'std', 'to_rgb', 'bgr_to_rgb')
                  if key in preprocessor}
    return tensor_path(model, scope, part).eval(), preprocess


def _check_size(height: int, width: int, dynamic: bool) -> None:
    low = MIN_DYNAMIC_SIZE if dynamic else 1
    for name, value in (('height', height), ('width', width)):
        if not low <= value <= MAX_DYNAMIC_SIZE:
            raise ExportError(f'export {name} {value} is out of range: {low}..{MAX_DYNAMIC_SIZE}'
                              + (' with dynamic sizes (torch.export specialises a patch grid '
                                 'of 1 or 2)' if dynamic else ''))


def export_onnx(module: nn.Module, out: str, height: int, width: int, batch: int = 1,
                dynamic: bool = False, opset: Optional[int] = None) -> None:
    """Write ``module`` (a tensor path) to the ONNX file ``out`` for a ``batch x 3 x height x
    width`` input named ``inputs``; with ``dynamic``, batch, height and width are free (H, W
    from :data:`MIN_DYNAMIC_SIZE`)."""
    _check_size(height, width, dynamic)
    # an example batch of 1 would be specialised to 1 (as sizes of 1 are); 2 keeps it free
    example = torch.randn(max(batch, 2) if dynamic else batch, 3, height, width)
    dynamic_shapes = None
    if dynamic:
        dims = (torch.export.Dim('batch', min=1, max=1024),
                torch.export.Dim('height', min=MIN_DYNAMIC_SIZE, max=MAX_DYNAMIC_SIZE),
                torch.export.Dim('width', min=MIN_DYNAMIC_SIZE, max=MAX_DYNAMIC_SIZE))
        dynamic_shapes = {'inputs': dict(zip((0, 2, 3), dims))}
    weight_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    module = exportable(module)
    with inner_backend('reference'), torch.no_grad():
        torch.onnx.export(module, (example,), out, input_names=['inputs'],
                          output_names=list(module.output_names), dynamic_shapes=dynamic_shapes,
                          dynamo=True, opset_version=opset,
                          external_data=weight_bytes > MAX_INLINE_BYTES, verbose=False)


def verify_onnx(out: str, module: nn.Module, shapes: Sequence[Tuple[int, int, int]],
                seed: int = 0) -> List[Dict[str, object]]:
    """Run the ONNX file in ONNX Runtime (CPU) and ``module`` in PyTorch on the same random
    inputs of each ``(batch, height, width)``; return per shape the largest absolute difference
    over all outputs and the output it occurs in."""
    import onnxruntime as ort

    session = ort.InferenceSession(out, providers=['CPUExecutionProvider'])
    names = [o.name for o in session.get_outputs()]
    generator = torch.Generator().manual_seed(seed)
    results = []
    for batch, height, width in shapes:
        inputs = torch.randn(batch, 3, height, width, generator=generator)
        with torch.no_grad():
            expected = module(inputs)
        expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
        got = session.run(None, {'inputs': inputs.numpy()})
        if len(got) != len(expected):
            raise ExportError(f'{out} has {len(got)} outputs, PyTorch gives {len(expected)}')
        worst, where = 0.0, names[0]
        for name, a, b in zip(names, got, expected):
            if a.shape != tuple(b.shape):
                raise ExportError(f'{out}: output {name} is {a.shape} at input '
                                  f'{(batch, 3, height, width)}, PyTorch gives {tuple(b.shape)}')
            diff = float(np.abs(a - b.numpy()).max()) if a.size else 0.0
            if diff > worst or not np.isfinite(diff):
                worst, where = diff, name
        results.append(dict(shape=(batch, 3, height, width), max_abs_diff=worst, output=where))
    return results
