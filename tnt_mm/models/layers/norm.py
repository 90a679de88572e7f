"""LayerNorms that keep float32 under autocast."""
from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def layer_norm(x: torch.Tensor, normalized_shape: List[int], weight: Optional[torch.Tensor],
               bias: Optional[torch.Tensor], eps: float) -> torch.Tensor:
    """``F.layer_norm``, computed in float32 when autocast hands it a half-precision input.

    CUDA's autocast runs layer_norm in float32 by itself; the CPU's runs it in the input's
    precision, where the mean and variance over hundreds of channels lose digits. This makes
    both behave as CUDA does (float32 out), and changes nothing outside autocast.
    """
    if x.dtype in _LOW_PRECISION and torch.is_autocast_enabled(x.device.type):
        with torch.autocast(x.device.type, enabled=False):
            return F.layer_norm(x.float(), normalized_shape,
                                None if weight is None else weight.float(),
                                None if bias is None else bias.float(), eps)
    return F.layer_norm(x, normalized_shape, weight, bias, eps)


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` in float32 under autocast (see :func:`layer_norm`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (batch-size independent, unlike BN), in
    float32 under autocast."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) -> (B, H, W, C) -> normalise C -> (B, C, H, W)
        x = layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                       self.eps)
        return x.permute(0, 3, 1, 2)
