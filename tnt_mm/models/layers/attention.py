"""Multi-head self-attention with TNT's parameter layout."""
from typing import Tuple

import torch
import torch.nn as nn

from tnt_mm.ops.reference import word_attention


class Attention(nn.Module):
    """Multi-head self-attention with the TNT parameter layout: a ``qk`` Linear (dim -> 2 dim)
    and a separate ``v`` Linear, computed by ``F.scaled_dot_product_attention``
    (:func:`tnt_mm.ops.reference.word_attention`).

    Args:
        dim (int): token width.
        num_heads (int): attention heads; must divide ``dim``.
        qkv_bias (bool): bias in the ``qk`` and ``v`` Linears. Defaults to False.
        attn_drop (float): dropout on the attention weights. Defaults to 0.
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
        self.attn_drop = attn_drop
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # any tokens, not only words: q|k and v as the Linears write them, SDPA in chunks if large
        x = word_attention(self.qk(x), self.v(x), self.num_heads,
                           self.attn_drop if self.training else 0.)
        return self.proj_drop(self.proj(x))

    @torch.no_grad()
    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The attention probabilities for input ``x`` (B, L, C): (B, heads, L, L).

        SDPA and the fused kernels never form them; this recomputes them for inspection
        (``tools/visualize_attention.py``).
        """
        q, k = self.query_key(x)
        return (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(dim=-1)
