"""Parameter and multiply-accumulate counts, as the TNT paper counts them.

MACs come from ``mmengine.analysis.FlopAnalyzer`` (which, despite its name, counts one
multiply-add as one "flop", the paper's convention). Two adjustments make its count the paper's:
``scaled_dot_product_attention`` has no handle in mmengine 0.10, so its two matrix products
(Q K^T and A V) are counted here; normalisation layers, which the paper leaves out of its
formula ``FLOPs_TNT = 2nmc(6c + m) + nmcd + 2nd(6d + n)``, are ignored.
"""
from typing import Any, List, Tuple

import torch
import torch.nn as nn

from tnt_mm.ops import inner_backend


def _sdpa_macs(inputs: List[Any], outputs: List[Any]) -> int:
    from mmengine.analysis.jit_handles import get_shape
    q, k, v = (get_shape(inputs[i]) for i in range(3))
    batch_heads = 1
    for size in q[:-2]:
        batch_heads *= size
    q_len, k_len = q[-2], k[-2]
    return batch_heads * q_len * k_len * (q[-1] + v[-1])  # Q K^T and A V


def _no_macs(inputs: List[Any], outputs: List[Any]) -> int:
    return 0


_NORM_OPS = ('aten::layer_norm', 'aten::group_norm', 'aten::batch_norm', 'aten::instance_norm')


def count_macs(model: nn.Module, inputs: Tuple[torch.Tensor, ...]) -> int:
    """Multiply-accumulates of one forward of ``model(*inputs)`` (paper convention)."""
    from mmengine.analysis import FlopAnalyzer
    was_training = model.training
    model.eval()
    try:
        analyzer = FlopAnalyzer(model, inputs)
        analyzer.set_op_handle('aten::scaled_dot_product_attention', _sdpa_macs)
        # A None handle only marks the op ignored in mmengine 0.10 and the default norm
        # handle still counts it; a handle that returns 0 leaves norms out.
        analyzer.set_op_handle(**{op: _no_macs for op in _NORM_OPS})
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
        # the trace records the reference ops, which the FLOP handles know
        with torch.no_grad(), inner_backend('reference'):
            return int(analyzer.total())
    finally:
        model.train(was_training)


def count_params(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of parameters (by default those that train)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# The paper's Table 1 and supplement Table 1: params (M, with the classifier and the official
# model's unused ``outer_tokens``) and FLOPs (G multiply-accumulates) at 224x224.
PAPER_SIZES = {
    'tiny': dict(arch='tiny', with_se=False, params=6.1, gmacs=1.4),
    'small': dict(arch='small', with_se=False, params=23.8, gmacs=5.2),
    'base': dict(arch='base', with_se=False, params=65.6, gmacs=14.1),
    'small+SE': dict(arch='small', with_se=True, params=24.7, gmacs=5.2),
}


def build_classifier(arch: str = 'small', with_se: bool = False, num_classes: int = 1000,
                     **backbone_kwargs) -> nn.Module:
    """An mmpretrain ``ImageClassifier`` with a TNT backbone and a linear head."""
    import tnt_mm  # noqa: F401  (registers tnt_mm.TNT)
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    from tnt_mm.models import TNT
    dim = TNT.arch_zoo[arch]['outer_dim'] if isinstance(arch, str) else arch['outer_dim']
    # mmengine builds from the process-wide default scope, whatever registry is called: an
    # earlier mmseg or mmdet Runner in the same process would make 'ImageClassifier' unknown.
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return MODELS.build(dict(
            type='ImageClassifier',
            backbone=dict(type='tnt_mm.TNT', arch=arch, out_type='cls_token', with_se=with_se,
                          **backbone_kwargs),
            head=dict(type='LinearClsHead', num_classes=num_classes, in_channels=dim)))


def complexity_table(img_size: int = 224) -> List[dict]:
    """Measure every paper variant: params (trainable, and as the paper counts them) and MACs."""
    rows = []
    for name, spec in PAPER_SIZES.items():
        model = build_classifier(spec['arch'], spec['with_se'])
        params = count_params(model)
        backbone = model.backbone
        # The official model carries an all-zero, non-trainable ``outer_tokens`` (1, n, d) that
        # the paper's counts include; this package does not keep that dead tensor.
        outer_tokens = backbone.pos_grid[0] * backbone.pos_grid[1] * backbone.embed_dims
        macs = count_macs(model, (torch.zeros(1, 3, img_size, img_size),))
        rows.append(dict(model=name, params=params, paper_count=params + outer_tokens,
                         paper_params=spec['params'], macs=macs, paper_gmacs=spec['gmacs']))
    return rows


def format_table(rows: List[dict], img_size: int = 224) -> str:
    lines = [f'| model | params (M) | params as the paper counts (M) | paper params (M) '
             f'| GMACs @{img_size} | paper FLOPs (G) |',
             '|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f'| TNT-{r["model"]} | {r["params"] / 1e6:.2f} | {r["paper_count"] / 1e6:.2f} '
                     f'| {r["paper_params"]} | {r["macs"] / 1e9:.2f} | {r["paper_gmacs"]} |')
    return '\n'.join(lines)


def config_complexity(config: str, height: int, width: int) -> Tuple[int, int]:
    """Params and MACs of the whole model a config builds (detector, segmentor or classifier),
    for one forward of a ``height`` x ``width`` image through its tensor path (``_forward``:
    raw head outputs, no post-processing), as mmdet's and mmseg's ``get_flops`` tools count.
    Operators without a FLOP handle in mmengine (RoIAlign, NMS) count as zero.

    The backbone's ``init_cfg`` is not applied: no checkpoint is needed.
    """
    from mmengine.config import Config
    from mmengine.registry import DefaultScope, MODELS
    import tnt_mm  # noqa: F401

    cfg = Config.fromfile(config)
    scope = cfg.get('default_scope', 'mmengine')
    meta = dict(img_shape=(height, width), ori_shape=(height, width), pad_shape=(height, width),
                batch_input_shape=(height, width), scale_factor=(1.0, 1.0))
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(cfg.model)
        if scope == 'mmdet':
            from mmdet.structures import DetDataSample as Sample
        elif scope == 'mmseg':
            from mmseg.structures import SegDataSample as Sample
        else:
            from mmpretrain.structures import DataSample as Sample
        samples = [Sample(metainfo=meta)]

        class TensorPath(nn.Module):  # FlopAnalyzer traces a module called on tensors only
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, inputs: torch.Tensor):
                return self.model._forward(inputs, samples)

        macs = count_macs(TensorPath(), (torch.zeros(1, 3, height, width),))
    return count_params(model), macs
