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

The requested backend comes from, in order: the innermost :func:`inner_backend` context, the
environment variable ``TNT_MM_INNER_BACKEND``, ``auto``. The backends are records in
:data:`REGISTRY`, tried in order: each declares which requests may pick it and every reason it
cannot run an input; the first without a reason runs it. The choice is kept per input
signature (device, dtype, shape less the batch, the block's settings, the modes), so a block
pays for it once. A forced backend that cannot run the input raises
:class:`BackendUnavailableError` naming every reason; ``auto`` never raises (``reference``
runs everything).
"""
import contextlib
import os
import warnings
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from . import cpu_kernels, reference, triton_kernels
from .amp import autocast_dtype
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


class Backend(NamedTuple):
    """One implementation of the inner transformer, as the dispatch sees it (after xformers'
    ``ops/fmha/dispatch.py``): which requested backends may pick it, every reason it cannot
    run an input, and how it runs one."""
    name: str  # what select() returns
    picked_by: Tuple[str, ...]  # the requested backends whose candidates it is
    not_supported_reasons: Callable[[torch.Tensor, InnerTransformerParams, bool, str],
                                    List[str]]
    run: Callable[[torch.Tensor, InnerTransformerParams, bool, bool], torch.Tensor]


def _triton_reasons(words, params, training, requested) -> List[str]:
    reasons = triton_kernels.inner_unsupported_reasons(words, params, training)
    if requested == 'auto':
        # equal to the reference on an H200 and 2x (fp32) to 9x (bf16) faster than it
        # (tools/analysis/check_triton_gpu.py); graphs (not yet run compiled on a GPU) keep
        # the reference
        if not triton_kernels.built_for(words.device):
            reasons.append(f'auto takes the Triton kernels on NVIDIA GPUs of compute capability '
                           f'8.0 or later only (the input is on {words.device})')
        capturing = reference.graph_capture()
        if capturing:
            reasons.append(f'auto keeps the reference ops in graphs: {capturing}')
    return reasons


def _cpu_fused_reasons(words, params, training, requested) -> List[str]:
    return cpu_kernels.inner_unsupported_reasons(words, params, training)


def _cpu_attention_reasons(words, params, training, requested) -> List[str]:
    return cpu_kernels.word_attention_unsupported_reasons(
        words, params.head_dim, params.attn_drop if training else 0.)


def _run_reference(words, params, training, recompute, attention=reference.word_attention):
    if recompute and torch.is_grad_enabled():
        return checkpoint(reference.inner_transformer, words, params, training, attention,
                          use_reentrant=False)
    return reference.inner_transformer(words, params, training, attention)


# In the order tried: the first that can run the input computes it.
REGISTRY: Tuple[Backend, ...] = (
    Backend('triton', ('auto', 'triton'), _triton_reasons,
            lambda words, params, training, recompute:
            triton_kernels.inner_transformer(words, params, training)),
    Backend('cpu_fused', ('auto', 'cpu'), _cpu_fused_reasons,
            lambda words, params, training, recompute:
            cpu_kernels.inner_transformer(words, params)),
    Backend('cpu_attention', ('auto', 'cpu'), _cpu_attention_reasons,
            lambda words, params, training, recompute: _run_reference(
                words, params, training, recompute, cpu_kernels.word_attention)),
    Backend('reference', ('auto', 'reference'), lambda *args: [], _run_reference),
)

# (requested backend, input signature) -> the Backend chosen; see _signature
_choices: Dict[tuple, Backend] = {}
_MAX_CHOICES = 1024


def _signature(requested: str, words: torch.Tensor, params: InnerTransformerParams,
               training: bool) -> tuple:
    """Everything the backends' reasons read, so that one choice holds for every call with the
    same signature: the input's device, dtype and shape less its batch, the block's settings,
    the modes (autocast, graphs) and the process's probes (Triton's interpreter, the built
    CPU extension), which tests may change."""
    device = words.device
    return (requested, device, words.dtype, words.shape[1:], words.numel() >= 2 ** 31,
            training, params.num_heads, params.head_dim, params.fc1_weight.shape[0],
            params.qk_bias is None, params.v_bias is None, bool(params.attn_drop),
            bool(params.drop), bool(params.drop_path),
            autocast_dtype(device.type), torch.is_autocast_enabled('cpu'),
            torch.jit.is_tracing(), torch.jit.is_scripting(), torch.compiler.is_exporting(),
            triton_kernels.built_for(device), triton_kernels.interpreting(),
            id(cpu_kernels._extension))


def choose(words: torch.Tensor, params: InnerTransformerParams, training: bool) -> Backend:
    """The backend that computes this call: the first in :data:`REGISTRY` that the requested
    backend may pick and that can run the input. Decided once per signature (see
    :func:`_signature`); graphs being compiled decide every time, as they trace it once.

    Raises:
        BackendUnavailableError: a forced backend cannot run the input; it names every reason
            of every candidate.
    """
    requested = requested_backend()
    compiling = torch.compiler.is_compiling()
    key = None if compiling else _signature(requested, words, params, training)
    chosen = _choices.get(key) if key is not None else None
    if chosen is not None:
        return chosen
    why_not = []
    for backend in REGISTRY:
        if requested not in backend.picked_by:
            continue
        reasons = backend.not_supported_reasons(words, params, training, requested)
        if not reasons:
            chosen = backend
            break
        why_not.append(f'{backend.name}: {"; ".join(reasons)}')
    if chosen is None:
        raise BackendUnavailableError(
            f'the inner-transformer backend "{requested}" was requested but cannot run this '
            f'input (words {tuple(words.shape)} {words.dtype} on {words.device}, '
            f'{params.num_heads} heads): {" | ".join(why_not)}. Use the "auto" or "reference" '
            f'backend ({ENV_VAR} or tnt_mm.ops.inner_backend)')
    if key is not None:
        if len(_choices) >= _MAX_CHOICES:
            _choices.clear()
        _choices[key] = chosen
    return chosen


def select(words: torch.Tensor, params: InnerTransformerParams, training: bool) -> str:
    """The name of the implementation that computes this call: ``'triton'``, ``'cpu_fused'``
    (the whole inner transformer in one kernel), ``'cpu_attention'`` (the reference with the
    word-attention kernel) or ``'reference'``."""
    return choose(words, params, training).name


def inner_transformer(words: torch.Tensor, params: InnerTransformerParams,
                      training: bool = False, recompute: bool = False,
                      patch_norm: Optional[nn.LayerNorm] = None):
    """TNT's inner transformer on the words of every patch, (N, m, c) -> (N, m, c), by the
    backend :func:`choose` picks; all of them give the outputs and gradients of
    :func:`tnt_mm.ops.reference.inner_transformer`.

    Args:
        words (Tensor): (N, m, c), m words of width c for each of N patches.
        params (InnerTransformerParams): the block's weights and settings.
        training (bool): apply dropout and stochastic depth. Defaults to False.
        recompute (bool): keep only ``words`` for the backward pass and recompute the
            activations there (the fused kernels always do). Defaults to False.
        patch_norm (nn.LayerNorm, optional): a LayerNorm over the m x c values of a patch
            (the words -> sentence norm of the official layout). Given, the call returns
            ``(words, patch_norm(words.reshape(N, m * c)))``; the Triton kernels compute it
            with the words where asked (``TNT_MM_TRITON_FUSED_NORM=1``, eager).
    """
    backend = choose(words, params, training)
    if patch_norm is None:
        return backend.run(words, params, training, recompute)
    if backend.name == 'triton' and triton_kernels.fuses_norm():
        return triton_kernels.inner_transformer(
            words, params, training, (patch_norm.weight, patch_norm.bias, patch_norm.eps))
    words = backend.run(words, params, training, recompute)
    return words, patch_norm(words.reshape(words.shape[0], -1))


def patch_update(sentences: torch.Tensor, projected: torch.Tensor,
                 norm: nn.LayerNorm) -> torch.Tensor:
    """The official layout's words -> sentence update: ``sentences`` (B, 1 + N, d) plus
    ``norm(projected)`` on every patch token, (B, N, d) the projected words, nothing on the
    class token. With the kernels' words -> sentence norm (``TNT_MM_TRITON_FUSED_NORM=1``),
    where the Triton backend is asked for or ``auto`` takes it and the kernel can run the
    input, one Triton kernel each way (:func:`~.triton_kernels.sentence_update`); else PyTorch.
    """
    if triton_kernels.fuses_norm():
        requested = requested_backend()
        if requested == 'triton' or (requested == 'auto'
                                     and triton_kernels.built_for(sentences.device)):
            if not triton_kernels.update_unsupported_reasons(sentences, projected, norm.weight,
                                                             norm.bias):
                return triton_kernels.sentence_update(sentences, projected, norm.weight,
                                                      norm.bias, norm.eps)
    # Out of place (in-place updates break autograd and checkpointing); padding rather than
    # concatenating the slices, whose backward zero-fills two full-size gradients.
    return sentences + F.pad(norm(projected), (0, 0, 1, 0))
