"""Multi-head self-attention with TNT's parameter layout."""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from tnt_mm.ops.reference import self_attention


class Attention(nn.Module):
    """Multi-head self-attention with the TNT parameter layout: a ``qk`` Linear (dim -> 2 dim)
    and a separate ``v`` Linear (the checkpoints' keys), computed as one ``qkv`` product and
    ``F.scaled_dot_product_attention`` (:func:`tnt_mm.ops.reference.self_attention`).

    Args:
        dim (int): token width.
        num_heads (int): attention heads; must divide ``dim``.
        qkv_bias (bool): bias in the ``qk`` and ``v`` Linears. Defaults to False.
        attn_drop (float): dropout rate on the attention weights (``attn_drop_rate``).
            Defaults to 0.
        proj_drop (float): dropout after the output projection. Defaults to 0.
    """

    def __init__(self,
                 dim: int,
                 num_heads: int,
                 qkv_bias: bool = False,
                 attn_drop: float = 0.,
                 proj_drop: float = 0.) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'attention width {dim} is not divisible by num_heads={num_heads}')
        self.num_heads = num_heads
        self.attn_drop_rate = attn_drop  # a rate: SDPA applies the dropout
        self.qk = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def query_key(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, L, C) -> q, k, each (B, heads, L, C/heads)."""
        batch, tokens, dim = x.shape
        # (B, L, 2C) -> (2, B, heads, L, C/heads)
        return self.qk(x).reshape(batch, tokens, 2, self.num_heads,
                                  dim // self.num_heads).permute(2, 0, 3, 1, 4)

    def qkv_weight(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The weight (3 dim, dim) and bias of the fused projection, [q | k | v]."""
        bias = None
        if self.qk.bias is not None:
            bias = torch.cat([self.qk.bias, self.v.bias])
        return torch.cat([self.qk.weight, self.v.weight]), bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One GEMM for q, k and v: concatenating the (small) weights costs a kernel, two
        # products, an input cast under autocast and the sum of two input gradients less.
        qkv = F.linear(x, *self.qkv_weight())
        x = self_attention(qkv, self.num_heads, self.attn_drop_rate if self.training else 0.)
        return self.proj_drop(self.proj(x))

    @torch.no_grad()
    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The attention probabilities for input ``x`` (B, L, C): (B, heads, L, L).

        SDPA and the fused kernels never form them; this recomputes them for inspection
        (``tools/visualize_attention.py``).
        """
        q, k = self.query_key(x)
        return (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(dim=-1)
