"""Export a tnt_mm model to ONNX and check the file against PyTorch in ONNX Runtime.

Three parts can be exported (``part``):

- ``'all'`` (the default): the whole model. For a detector, the image to its detections,
  post-processing included (:mod:`.detector_export`): Faster R-CNN and Mask R-CNN (boxes,
  scores, labels, masks) and DETR. For a classifier or segmentor, its tensor path below;
- ``'model'``: a model's *tensor path*, the network from the normalised image batch to the raw
  head outputs, as mmdet's / mmseg's ``mode='tensor'``:

  - classifier (mmpretrain): the logits, ``(B, num_classes)``;
  - segmentor (mmseg): the decode head's logits, ``(B, num_classes, H / 4, W / 4)``;
  - two-stage detector: the FPN levels and the RPN's objectness and box deltas per level;
- ``'backbone'``: the TNT feature pyramid alone (any detector or segmentor config).

The graph is taken by ``torch.export`` (``torch.onnx.export(dynamo=True)``). The backbone follows
shape-generic paths while exporting (``torch.compiler.is_exporting()``: always pad, always
resample the position embedding, pool odd grids by padding), so a ``dynamic`` file is right at
every size it accepts, not only at the sizes it was traced at. The fused CPU kernels never enter
the graph: the export runs the reference inner transformer.

What a file needs to be used (normalisation, the test resize, class names, the baked-in test
settings) is written into its metadata under :data:`METADATA_KEY`, as JSON.
"""
import copy
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from tnt_mm.ops import inner_backend

from .detector_export import DETRPath, ExportError, TwoStageDetectorPath

PARTS = ('all', 'model', 'backbone')
METADATA_KEY = 'tnt_mm'
# torch.export specialises a size of 1 (broadcasting): a dynamic file takes H, W >= 33, where
# the patch grid (ceil(H / 16)) is at least 3 and the stride-32 level at least 2 wide.
MIN_DYNAMIC_SIZE = 33
MAX_DYNAMIC_SIZE = 8192
# Weights above this go to a side file (<out>.data): protobuf stops at 2 GB.
MAX_INLINE_BYTES = 1_800_000_000


def is_whole_detector(module: nn.Module) -> bool:
    """The module exports a detector with its post-processing (boxes, scores, labels out)."""
    return module.output_names[:3] == ['boxes', 'scores', 'labels']


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


def export_module(model: nn.Module, scope: str, part: str = 'all') -> nn.Module:
    """The module that is exported of ``part`` of a model built from a config of ``scope``."""
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
        return TwoStageDetectorPath(model) if part == 'all' else TwoStageTensorPath(model)
    if scope == 'mmdet' and type(model).__name__ == 'DETR':
        if part == 'all':
            return DETRPath(model)
        raise ExportError('DETR has no tensor path of its own: its transformer builds the '
                          'padding mask from the data samples. Export it whole with '
                          'part="all" (--part all), or its backbone with part="backbone"')
    raise ExportError(
        f'{type(model).__name__} ({scope}) is not a model this exporter knows: classifiers, '
        f'segmentors, two-stage detectors and DETR are supported; export its backbone with '
        f'part="backbone" (--part backbone)')


TASKS = {'mmpretrain': 'classification', 'mmseg': 'segmentation', 'mmdet': 'detection'}


def _classes(cfg, checkpoint_meta: dict) -> Optional[List[str]]:
    """The class names: the checkpoint's ``dataset_meta``, else the test dataset's metainfo,
    else its dataset class's."""
    from mmengine.registry import DATASETS

    meta = (checkpoint_meta or {}).get('dataset_meta') or {}
    if meta.get('classes'):
        return list(meta['classes'])
    dataset = (cfg.get('test_dataloader') or {}).get('dataset') or {}
    classes = (dataset.get('metainfo') or {}).get('classes')
    if classes:
        return list(classes)
    dataset_type = DATASETS.get(dataset.get('type', '')) if dataset.get('type') else None
    classes = getattr(dataset_type, 'METAINFO', {}).get('classes')
    return list(classes) if classes else None


def _test_resize(cfg) -> Optional[dict]:
    """The test pipeline's ``Resize`` (``scale`` as (w, h), ``keep_ratio``), if it has one."""
    dataset = (cfg.get('test_dataloader') or {}).get('dataset') or {}
    for transform in dataset.get('pipeline') or []:
        if transform.get('type', '').split('.')[-1] == 'Resize' and transform.get('scale'):
            scale = transform['scale']
            scale = [scale, scale] if isinstance(scale, int) else list(scale)
            return dict(scale=scale, keep_ratio=bool(transform.get('keep_ratio', False)))
    return None


def export_metadata(cfg, scope: str, part: str, module: nn.Module,
                    checkpoint_meta: Optional[dict] = None) -> dict:
    """What a user of the file needs, stored in it (:data:`METADATA_KEY`): the input's
    normalisation, channel order and the test resize, the class names, the outputs and, for a
    whole detector, the test settings the graph holds."""
    # mmdet / mmseg configs put it in the model, mmpretrain's at the top level
    preprocessor = cfg.model.get('data_preprocessor') or cfg.get('data_preprocessor') or {}
    metadata = dict(
        task=TASKS.get(scope, scope), part=part,
        config=os.path.basename(cfg.filename or ''),
        input=dict(name='inputs', mean=preprocessor.get('mean'), std=preprocessor.get('std'),
                   rgb=bool(preprocessor.get('bgr_to_rgb') or preprocessor.get('to_rgb')),
                   pad_size_divisor=int(preprocessor.get('pad_size_divisor', 1))),
        resize=_test_resize(cfg), classes=_classes(cfg, checkpoint_meta),
        outputs=list(module.output_names))
    if hasattr(module, 'test_settings'):
        metadata['test_cfg'] = module.test_settings()
    return metadata


def build_from_config(config: str, checkpoint: Optional[str] = None,
                      part: str = 'all') -> Tuple[nn.Module, dict]:
    """Build the model of ``config`` (loading ``checkpoint`` strictly, if given) and return the
    module to export of ``part``, in eval mode, and its :func:`export_metadata`: the graph
    expects its input normalised as ``metadata['input']`` says."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope, MODELS
    from mmengine.runner import load_checkpoint

    import tnt_mm  # noqa: F401  (registers the backbone)

    cfg = Config.fromfile(config)
    scope = cfg.get('default_scope', 'mmengine')
    model_cfg = copy.deepcopy(cfg.model)
    backbone = model_cfg.get('backbone', {})
    backbone.pop('init_cfg', None)  # the checkpoint gives all weights; no pretrained file needed
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(model_cfg)
    checkpoint_meta = None
    if checkpoint is not None:
        loaded = load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
        checkpoint_meta = loaded.get('meta') if isinstance(loaded, dict) else None
    with DefaultScope.overwrite_default_scope(scope):
        module = export_module(model, scope, part).eval()
        metadata = export_metadata(cfg, scope, part, module, checkpoint_meta)
    return module, metadata


def _check_size(height: int, width: int, dynamic: bool) -> None:
    low = MIN_DYNAMIC_SIZE if dynamic else 1
    for name, value in (('height', height), ('width', width)):
        if not low <= value <= MAX_DYNAMIC_SIZE:
            raise ExportError(f'export {name} {value} is out of range: {low}..{MAX_DYNAMIC_SIZE}'
                              + (' with dynamic sizes (torch.export specialises a patch grid '
                                 'of 1 or 2)' if dynamic else ''))


def export_onnx(module: nn.Module, out: str, height: int, width: int, batch: int = 1,
                dynamic: bool = False, opset: Optional[int] = None,
                metadata: Optional[dict] = None) -> None:
    """Write ``module`` (from :func:`export_module`) to the ONNX file ``out`` for a ``batch x 3
    x height x width`` input named ``inputs``; with ``dynamic``, batch, height and width are
    free (H, W from :data:`MIN_DYNAMIC_SIZE`). A whole detector takes one image: its batch is
    1. ``metadata`` is stored in the file under :data:`METADATA_KEY`."""
    _check_size(height, width, dynamic)
    single_image = is_whole_detector(module)
    if single_image and batch != 1:
        raise ExportError(f'batch {batch}: a whole detector is exported for one image at a time '
                          f'(its outputs are that image\'s detections)')
    # an example batch of 1 would be specialised to 1 (as sizes of 1 are); 2 keeps it free
    example = torch.randn(max(batch, 2) if dynamic and not single_image else batch, 3, height,
                          width)
    dynamic_shapes = None
    if dynamic:
        dims = {2: torch.export.Dim('height', min=MIN_DYNAMIC_SIZE, max=MAX_DYNAMIC_SIZE),
                3: torch.export.Dim('width', min=MIN_DYNAMIC_SIZE, max=MAX_DYNAMIC_SIZE)}
        if not single_image:
            dims[0] = torch.export.Dim('batch', min=1, max=1024)
        dynamic_shapes = {'inputs': dims}
    weight_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    module = exportable(module)
    with inner_backend('reference'), torch.no_grad():
        torch.onnx.export(module, (example,), out, input_names=['inputs'],
                          output_names=list(module.output_names), dynamic_shapes=dynamic_shapes,
                          dynamo=True, opset_version=opset,
                          external_data=weight_bytes > MAX_INLINE_BYTES, verbose=False)
    if metadata is not None:
        write_metadata(out, metadata)


def write_metadata(path: str, metadata: dict) -> None:
    """Store ``metadata`` as JSON in the ONNX file's ``metadata_props`` (weights in a side
    file stay there)."""
    import onnx

    model = onnx.load(path, load_external_data=False)
    kept = [(p.key, p.value) for p in model.metadata_props if p.key != METADATA_KEY]
    onnx.helper.set_model_props(model, dict(kept, **{METADATA_KEY: json.dumps(metadata)}))
    onnx.save(model, path)


def read_metadata(path: str) -> dict:
    """The metadata :func:`export_onnx` stored in ``path`` (empty if it has none)."""
    import onnx

    model = onnx.load(path, load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    return {}


def verify_onnx(out: str, module: nn.Module, shapes: Sequence[Tuple[int, int, int]],
                seed: int = 0) -> List[Dict[str, object]]:
    """Run the ONNX file in ONNX Runtime (CPU) and ``module`` in PyTorch on the same random
    inputs of each ``(batch, height, width)``; return per shape the largest difference over all
    outputs, relative to each output's largest magnitude where that is above 1 (boxes are in
    pixels, logits near 1), and the output it occurs in."""
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
            b = b.numpy()
            diff = float(np.abs(a - b).max() / max(1.0, np.abs(b).max())) if a.size else 0.0
            if diff > worst or not np.isfinite(diff):
                worst, where = diff, name
        results.append(dict(shape=(batch, 3, height, width), max_diff=worst, output=where))
    return results


def time_onnx(out: str, module: nn.Module, shape: Tuple[int, int, int],
              runs: int = 5) -> Dict[str, List[float]]:
    """Seconds per forward of the ONNX file in ONNX Runtime and of ``module`` in eager PyTorch
    (the tensor path or whole detector exported), on the CPU with the same number of threads,
    on one random input of ``(batch, height, width)``: one warm-up each, then ``runs`` rounds
    taking turns, so that both see the same machine load."""
    import time

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(out, options, providers=['CPUExecutionProvider'])
    inputs = torch.randn(shape[0], 3, shape[1], shape[2],
                         generator=torch.Generator().manual_seed(0))
    feed = {'inputs': inputs.numpy()}
    times: Dict[str, List[float]] = {'onnxruntime': [], 'pytorch': []}
    with torch.no_grad():
        for round_ in range(runs + 1):
            for name, run in (('onnxruntime', lambda: session.run(None, feed)),
                              ('pytorch', lambda: module(inputs))):
                start = time.perf_counter()
                run()
                if round_:  # the first round warms up
                    times[name].append(time.perf_counter() - start)
    return times
