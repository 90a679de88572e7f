"""Rescale stride-16 transformer features into a feature pyramid (strides 4, 8, 16, 32).

The TNT supplement (Faster R-CNN + FPN, Table 2) takes the outputs of blocks 3, 6, 9 and 12,
all at stride 16, and "inserts deconvolution/convolution layers with proper stride" so that FPN
gets four levels at 1/4, 1/8, 1/16 and 1/32. The layers follow detectron2 ViTDet's
``SimpleFeaturePyramid`` (deconvolutions up, pooling down, one table of scale factors), each level
then refined by a 3x3 convolution. Their weight is pinned by the paper's parameter counts:
Faster R-CNN with TNT-S has 48.1M parameters and with DeiT-S 46.4M (checked in the tests).
"""
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import LayerNorm2d


NORMS = ('LN', None)


def _norm(kind: Optional[str], dim: int) -> List[nn.Module]:
    return [LayerNorm2d(dim)] if kind == 'LN' else []


class HalfMaxPool2d(nn.MaxPool2d):
    """2x2 max pooling that keeps the last row/column of an odd grid (``ceil_mode``): the input
    was padded, not cropped, so no patch is dropped. A grid of size g gives ceil(g / 2)."""

    def __init__(self) -> None:
        super().__init__(2, stride=2, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_exporting():
            return super().forward(x)
        # torch.export specialises ceil_mode on the parity of the grid; padding odd sizes with
        # -inf to even ones and pooling without ceil_mode is the same for every size.
        height, width = x.shape[-2:]
        x = F.pad(x, (0, (width + 1) // 2 * 2 - width, 0, (height + 1) // 2 * 2 - height),
                  value=float('-inf'))
        return F.max_pool2d(x, 2, stride=2)


def _rescale_layers(scale: float, dim: int, norm: Optional[str]) -> List[nn.Module]:
    """The layers that change the resolution of a (B, dim, H, W) map by ``scale``."""
    if scale == 4.0:
        return [nn.ConvTranspose2d(dim, dim, 2, stride=2), *_norm(norm, dim), nn.GELU(),
                nn.ConvTranspose2d(dim, dim, 2, stride=2)]
    if scale == 2.0:
        return [nn.ConvTranspose2d(dim, dim, 2, stride=2)]
    if scale == 1.0:
        return []
    if scale == 0.5:
        return [HalfMaxPool2d()]
    raise NotImplementedError(f'scale factor {scale} is not supported; use 4.0, 2.0, 1.0 or 0.5')


class PyramidRescaler(nn.Module):
    """Turn equal-stride feature maps into a pyramid, one scale factor per input map.

    A 0.5 level max-pools with ``ceil_mode``: an odd grid of size g gives ceil(g / 2).

    Args:
        in_channels (int): channels of every input map.
        out_channels (int): channels of every output map.
        scale_factors (Sequence[float]): resolution factor of each level, from
            ``{4.0, 2.0, 1.0, 0.5}``. Defaults to ``(4.0, 2.0, 1.0, 0.5)``.
        norm (str, optional): ``'LN'``: a channel LayerNorm after each level's convolution
            (and between the two deconvolutions), as ViTDet; ``None``: none, the convolutions
            get a bias instead; small detectors trained from scratch learn the classes
            faster without it (docs/design.md). Defaults to ``'LN'``.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
                 norm: Optional[str] = 'LN') -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f'pyramid norm {norm!r} is not supported; use one of {NORMS}')
        self.scale_factors = tuple(float(s) for s in scale_factors)
        self.levels = nn.ModuleList()
        for scale in self.scale_factors:
            self.levels.append(nn.Sequential(
                *_rescale_layers(scale, in_channels, norm),
                nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=norm is None),
                *_norm(norm, out_channels),
            ))

    def forward(self, feats: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        if len(feats) != len(self.levels):
            raise ValueError(f'PyramidRescaler has {len(self.levels)} levels but got '
                             f'{len(feats)} feature maps')
        return [level(feat) for level, feat in zip(self.levels, feats)]
