"""The one place that decides which implementation computes TNT's inner transformer.

Backends:

- ``reference``: plain PyTorch (:mod:`tnt_mm.ops.reference`); runs everywhere.
- ``cpu``: the fused C++ kernels (:mod:`tnt_mm.ops.cpu_kernels`): the whole inner transformer
  in one kernel where its contract holds, else the reference with the word-attention kernel.
- ``triton``: the fused Triton kernels (:mod:`tnt_mm.ops.triton_kernels`), for CUDA tensors
  (CPU tensors in Triton's interpreter, ``TRITON_INTERPRET=1``, for tests); in torch.compile
  graphs as custom ops, when asked for.
- ``auto`` (default): on CUDA tensors ``triton`` where it can run the input (NVIDIA GPUs of
  compute capability 8.0 or later; eager only); on CPU tensors ``cpu`` where it can; else
  ``reference``.

The choice is made per call from, in order: the innermost :func:`inner_backend` context, the
environment variable ``TNT_MM_INNER_BACKEND``, ``auto``. A forced backend that cannot run the
input raises :class:`BackendUnavailableError` naming why; ``auto`` never raises.
"""
import contextlib
import os
import warnings
from typing import Iterator, List

import torch
from torch.utils.checkpoint import checkpoint

from . import cpu_kernels, reference, triton_kernels
from .params import InnerTransformerParams

BACKENDS = ('auto', 'reference', 'cpu', 'triton')
ENV_VAR = 'TNT_MM_INNER_BACKEND'
LEGACY_ENV_VAR = 'TNT_MM_WORD_KERNEL'  # '0' meant reference; removed in the next release

_forced: List[str] = []  # the stack of inner_backend() contexts


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot compute the given input."""


def _check(name: str, origin: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f'{origin}={name!r} is not an inner-transformer backend; choose one '
                         f'of {BACKENDS}')
    return name


@contextlib.contextmanager
def inner_backend(name: str) -> Iterator[None]:
    """Force the inner-transformer backend within the block (nestable; overrides
    ``TNT_MM_INNER_BACKEND``)::

        with tnt_mm.ops.inner_backend('reference'):
            feats = model(images)
    """
    _forced.append(_check(name, 'inner_backend'))
    try:
        yield
    finally:
        _forced.pop()


@contextlib.contextmanager
def reference_attention() -> Iterator[None]:
    """Deprecated name of ``inner_backend('reference')``."""
    warnings.warn("reference_attention() is deprecated and will be removed in the next "
                  "release; use tnt_mm.ops.inner_backend('reference')", FutureWarning,
                  stacklevel=3)
    with inner_backend('reference'):
        yield


def requested_backend() -> str:
    """The backend asked for here: the innermost context, else the environment, else auto."""
    if _forced:
        return _forced[-1]
    value = os.environ.get(ENV_VAR)
    if value is None:
        if os.environ.get(LEGACY_ENV_VAR) == '0':
            warnings.warn(f'{LEGACY_ENV_VAR}=0 is deprecated and will be removed in the next '
                          f'release; set {ENV_VAR}=reference', FutureWarning, stacklevel=2)
            return 'reference'
        return 'auto'
    return _check(value.strip().lower(), ENV_VAR)


def select(words: torch.Tensor, params: InnerTransformerParams, training: bool) -> str:
    """The implementation that computes this call: ``'reference'``, ``'cpu_fused'`` (the whole
    inner transformer in one kernel), ``'cpu_attention'`` (the reference with the
    word-attention kernel) or ``'triton'``."""
    backend = requested_backend()
    if backend == 'reference':
        return 'reference'
    if backend == 'auto' and triton_kernels.built_for(words.device):
        # equal to the reference on an H200 and 2x (fp32) to 9x (bf16) faster than it
        # (tools/analysis/check_triton_gpu.py); graphs (not yet run compiled on a GPU) and
        # dropout keep the reference
        if (reference.graph_capture() is None
                and triton_kernels.inner_unsupported(words, params, training) is None):
            return 'triton'
        return 'reference'
    if backend == 'triton':
        why_not = triton_kernels.inner_unsupported(words, params, training)
        if why_not is None:
            return 'triton'
        raise BackendUnavailableError(
            f'the inner-transformer backend "triton" was requested but cannot run this input '
            f'(words {tuple(words.shape)} {words.dtype} on {words.device}, '
            f'{params.num_heads} heads): {why_not}. Use the "auto" or "reference" backend '
            f'({ENV_VAR} or tnt_mm.ops.inner_backend)')
    why_not_fused = cpu_kernels.inner_unsupported(words, params, training)
    if why_not_fused is None:
        return 'cpu_fused'
    why_not_attention = cpu_kernels.word_attention_unsupported(
        words, params.head_dim, params.attn_drop if training else 0.)
    if why_not_attention is None:
        return 'cpu_attention'
    if backend == 'cpu':
        raise BackendUnavailableError(
            f'the inner-transformer backend "cpu" was requested but cannot run this input '
            f'(words {tuple(words.shape)} {words.dtype} on {words.device}, '
            f'{params.num_heads} heads): the fused kernel: {why_not_fused}; the word-attention '
            f'kernel: {why_not_attention}. Use the "auto" or "reference" backend '
            f'({ENV_VAR} or tnt_mm.ops.inner_backend)')
    return 'reference'


def inner_transformer(words: torch.Tensor, params: InnerTransformerParams,
                      training: bool = False, recompute: bool = False) -> torch.Tensor:
    """TNT's inner transformer on the words of every patch, (N, m, c) -> (N, m, c), by the
    backend :func:`select` picks; all of them give the outputs and gradients of
    :func:`tnt_mm.ops.reference.inner_transformer`.

    Args:
        words (Tensor): (N, m, c), m words of width c for each of N patches.
        params (InnerTransformerParams): the block's weights and settings.
        training (bool): apply dropout and stochastic depth. Defaults to False.
        recompute (bool): keep only ``words`` for the backward pass and recompute the
            activations there (the fused kernels always do). Defaults to False.
    """
    implementation = select(words, params, training)
    if implementation == 'triton':
        return triton_kernels.inner_transformer(words, params, training)
    if implementation == 'cpu_fused':
        return cpu_kernels.inner_transformer(words, params)
    attention = (cpu_kernels.word_attention if implementation == 'cpu_attention'
                 else reference.word_attention)
    if recompute and torch.is_grad_enabled():
        return checkpoint(reference.inner_transformer, words, params, training, attention,
                          use_reentrant=False)
    return reference.inner_transformer(words, params, training, attention)

