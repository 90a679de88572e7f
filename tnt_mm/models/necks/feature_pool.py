"""Average pooling in front of another neck: DETR with TNT (paper Section 5.6).

"A 2x2 average pool brings TNT output to stride 32" before DETR's input projection. The pool
uses ceil mode, so a padded image's last row and column of patches are kept.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.model import BaseModule

from tnt_mm.registry import MODELS


@MODELS.register_module()
class FeaturePool(BaseModule):
    """Average-pool every feature map by ``kernel_size``, then apply ``neck`` if given.

    Args:
        kernel_size (int): pooling window and stride. Defaults to 2 (stride 16 -> 32).
        neck (dict, optional): the neck that follows, e.g.
            ``dict(type='mmdet.ChannelMapper', ...)``. Defaults to None.
        init_cfg (dict, optional): initialisation config. Defaults to None.
    """

    def __init__(self, kernel_size: int = 2, neck: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.pool = nn.AvgPool2d(kernel_size, stride=kernel_size, ceil_mode=True)
        self.neck = MODELS.build(neck) if neck is not None else None

    def forward(self, feats: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        pooled = tuple(self.pool(feat) for feat in feats)
        return self.neck(pooled) if self.neck is not None else pooled
