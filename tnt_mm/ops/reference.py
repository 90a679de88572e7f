"""Plain-PyTorch reference implementations of the ops the kernels fuse.

They define what every backend computes: the kernels are tested against them, and they run
wherever no kernel applies (other devices and dtypes, tracing, ``torch.compile``, dropout).
"""
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torchvision.ops import stochastic_depth

from .params import InnerTransformerParams

AttentionFn = Callable[[torch.Tensor, torch.Tensor, int, float], torch.Tensor]

# The most (sequence x head) problems one scaled_dot_product_attention call gets. CUDA's fused
# SDPA kernels put them on one grid dimension, which stops at 65,535 blocks: batch 16 at
# 800x1333 already has 67,200 patches of 4 heads. Larger batches are computed in chunks.
MAX_ATTENTION_BATCH = 65535


def graph_capture() -> Optional[str]:
    """Why no kernel may run now, if a graph is being recorded (TorchScript, torch.compile,
    torch.export): graphs keep the reference ops. None in eager mode."""
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return 'TorchScript tracing/scripting records the reference ops only'
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return 'torch.compile / torch.export graphs keep the reference ops'
    return None


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               dropout_p: float) -> torch.Tensor:
    """SDPA of (N, heads, L, C/heads) q, k, v -> (N, L, C), in chunks of at most
    ``MAX_ATTENTION_BATCH`` (sequence x head) problems."""
    batch, num_heads, tokens, head_dim = v.shape
    step = max(1, MAX_ATTENTION_BATCH // num_heads)
    if batch <= step:
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    else:
        out = torch.cat([F.scaled_dot_product_attention(q[i:i + step], k[i:i + step],
                                                         v[i:i + step], dropout_p=dropout_p)
                         for i in range(0, batch, step)])
    # (N, heads, L, C/heads) -> (N, L, C)
    return out.transpose(1, 2).reshape(batch, tokens, num_heads * head_dim)


def word_attention(qk: torch.Tensor, v: torch.Tensor, num_heads: int,
                   dropout_p: float = 0.) -> torch.Tensor:
    """Multi-head attention over the words of each patch, from the inner transformer's two
    projections (the CPU word-attention kernel takes the same arguments).

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
    return _attention(q, k, v, dropout_p)


def self_attention(qkv: torch.Tensor, num_heads: int, dropout_p: float = 0.) -> torch.Tensor:
    """Multi-head self-attention of any tokens from one fused projection.

    Args:
        qkv (Tensor): (N, L, 3C), [q | k | v].
        num_heads (int): heads; the scale is ``(C / num_heads) ** -0.5``.
        dropout_p (float): dropout on the attention weights. Defaults to 0.

    Returns:
        Tensor: (N, L, C), heads concatenated.
    """
    batch, tokens, width = qkv.shape
    # (N, L, 3C) -> 3 x (N, heads, L, C/heads); the backward stacks the three gradients in one
    # kernel
    q, k, v = qkv.reshape(batch, tokens, 3, num_heads,
                          width // (3 * num_heads)).permute(2, 0, 3, 1, 4).unbind(0)
    return _attention(q, k, v, dropout_p)


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
