"""Plain-PyTorch reference implementations of the ops the kernels fuse.

They define what every backend computes: the kernels are tested against them, and they run
wherever no kernel applies (other devices and dtypes, tracing, ``torch.compile``, dropout).
"""
from typing import Callable

import torch
import torch.nn.functional as F
from torchvision.ops import stochastic_depth

from .params import InnerTransformerParams

AttentionFn = Callable[[torch.Tensor, torch.Tensor, int, float], torch.Tensor]


def word_attention(qk: torch.Tensor, v: torch.Tensor, num_heads: int,
                   dropout_p: float = 0.) -> torch.Tensor:
    """Multi-head attention over the words of each patch.

    Args:
        qk (Tensor): (N, L, 2C), [q | k] as the ``qk`` Linear writes them.
        v (Tensor): (N, L, C).
        num_heads (int): heads; the scale is ``(C / num_heads) ** -0.5``.
        dropout_p (float): dropout on the attention weights. Defaults to 0.

    Returns:
        Tensor: (N, L, C), heads concatenated.
    """
    batch, tokens, dim = v.shape
    head_dim = dim // num_heads
    # (N, L, 2C) -> (2, N, heads, L, C/heads)
    q, k = qk.reshape(batch, tokens, 2, num_heads, head_dim).permute(2, 0, 3, 1, 4)
    v = v.reshape(batch, tokens, num_heads, head_dim).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    return out.transpose(1, 2).reshape(batch, tokens, dim)  # (N, heads, L, C/h) -> (N, L, C)


def inner_transformer(words: torch.Tensor, params: InnerTransformerParams,
                      training: bool = False,
                      attention: AttentionFn = word_attention) -> torch.Tensor:
    """The TNT inner transformer on ``words`` (N, m, c) -> (N, m, c).

    ``attention`` computes the attention from the projected q|k and v (the CPU backend passes
    its word-attention kernel here); dropout and stochastic depth apply in ``training`` only.
    """
    p = params
    dim = words.shape[-1]
    x = F.layer_norm(words, (dim,), p.norm1_weight, p.norm1_bias, p.eps)
    x = attention(F.linear(x, p.qk_weight, p.qk_bias), F.linear(x, p.v_weight, p.v_bias),
                  p.num_heads, p.attn_drop if training else 0.)
    x = F.dropout(F.linear(x, p.proj_weight, p.proj_bias), p.drop, training)
    words = words + stochastic_depth(x, p.drop_path, 'row', training)
    x = F.layer_norm(words, (dim,), p.norm2_weight, p.norm2_bias, p.eps)
    x = F.dropout(F.gelu(F.linear(x, p.fc1_weight, p.fc1_bias)), p.drop, training)
    x = F.dropout(F.linear(x, p.fc2_weight, p.fc2_bias), p.drop, training)
    return words + stochastic_depth(x, p.drop_path, 'row', training)
