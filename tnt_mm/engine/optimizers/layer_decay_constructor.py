"""Layer-wise learning-rate decay for the backbone of any model: classifier, detector or
segmentor.

How ViTDet, BEiT and MAE fine-tune plain ViTs: block ``i`` of ``depth`` trains at
``rate ** (depth - i)`` times the base lr, the embeddings at ``rate ** (depth + 1)``, and
everything after the backbone at the base lr. mmpretrain's
``LearningRateDecayOptimWrapperConstructor`` does this for its classifiers only (it needs a
model-level ``get_layer_depth``, which mmdet and mmseg models lack) and drops the other
``paramwise_cfg`` rules' ``lr_mult``. This one asks the backbone, and keeps every rule of
mmengine's ``DefaultOptimWrapperConstructor`` (``custom_keys``, ``norm_decay_mult``,
``bias_decay_mult``, ...); the decay multiplies whatever lr those rules give.
"""
from typing import Callable, List, Optional, Tuple

from mmengine.logging import MMLogger
from torch import nn

from tnt_mm.registry import OPTIM_WRAPPER_CONSTRUCTORS
from .merged_groups_constructor import MergedGroupsOptimWrapperConstructor


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimWrapperConstructor(MergedGroupsOptimWrapperConstructor):
    """``DefaultOptimWrapperConstructor`` plus ``paramwise_cfg.layer_decay_rate``, the groups
    merged per setting (:class:`MergedGroupsOptimWrapperConstructor`).

    The depth of each parameter comes from the model's ``get_layer_depth(name)`` (mmpretrain
    classifiers) or its backbone's ``get_layer_depth(name, 'backbone.')`` (:class:`tnt_mm.TNT`,
    mmpretrain's ViTs), which return ``(layer, num_layers)``; the parameter's lr is multiplied
    by ``layer_decay_rate ** (num_layers - layer - 1)``. Every group also records ``lr_scale``
    and ``layer_id``::

        optim_wrapper = dict(
            constructor='tnt_mm.LayerDecayOptimWrapperConstructor',
            optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.1),
            paramwise_cfg=dict(layer_decay_rate=0.7, norm_decay_mult=0.0,
                               custom_keys={'.cls_token': dict(decay_mult=0.0)}))

    Args:
        optim_wrapper_cfg (dict): as for ``DefaultOptimWrapperConstructor``.
        paramwise_cfg (dict, optional): its options, and ``layer_decay_rate`` (float in
            (0, 1]; 1, the default, is no decay).
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None) -> None:
        # the key stays in paramwise_cfg: with an empty one mmengine skips add_params
        paramwise_cfg = dict(paramwise_cfg or {})
        self.layer_decay_rate = float(paramwise_cfg.get('layer_decay_rate', 1.0))
        if not 0 < self.layer_decay_rate <= 1:
            raise ValueError(f'paramwise_cfg.layer_decay_rate={self.layer_decay_rate} must be '
                             f'in (0, 1]: the rate each layer down from the top multiplies the '
                             f'lr by')
        super().__init__(optim_wrapper_cfg, paramwise_cfg)

    @staticmethod
    def layer_depth_fn(model: nn.Module) -> Callable[[str], Tuple[int, int]]:
        """``name -> (layer, num_layers)`` for the parameters of ``model``."""
        if hasattr(model, 'get_layer_depth'):
            return model.get_layer_depth
        backbone = getattr(model, 'backbone', None)
        if backbone is not None and hasattr(backbone, 'get_layer_depth'):
            return lambda name: backbone.get_layer_depth(name, 'backbone.')
        raise TypeError(
            f'layer-wise lr decay needs the layer of every parameter, but neither '
            f'{type(model).__name__} nor its backbone '
            f'({type(backbone).__name__ if backbone is not None else "none"}) has a '
            f'get_layer_depth method; tnt_mm.TNT and mmpretrain\'s ViTs have one')

    def adjust_groups(self, params: List[dict], module: nn.Module) -> None:
        """Each parameter's lr times its layer's decay, before the groups are merged."""
        depth_of = self.layer_depth_fn(module)
        names = {id(param): name for name, param in module.named_parameters()}
        scales = {}
        for group in params:
            layer, num_layers = depth_of(names[id(group['params'][0])])
            scale = self.layer_decay_rate ** (num_layers - layer - 1)
            group['lr'] = group.get('lr', self.base_lr) * scale
            group['lr_scale'], group['layer_id'] = scale, layer
            scales[layer] = scale
        MMLogger.get_current_instance().info(
            f'layer-wise lr decay {self.layer_decay_rate}: lr scale per layer ' +
            ', '.join(f'{layer}: {scale:.3g}' for layer, scale in sorted(scales.items())))
