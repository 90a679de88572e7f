"""Fused CPU kernels for TNT's inner transformer, forward and backward, built on first use.

The inner transformer works on the 16 words of every patch, 12-40 channels wide, with heads 6
(TNT-Ti/S) or 10 (TNT-B) wide: tens of thousands of tiny problems per image, which PyTorch runs
as many small, memory-bound ops. Two kernels replace them:

- ``csrc/inner_transformer.cpp``: the whole inner transformer (LN -> qkv -> attention -> proj
  + residual -> LN -> fc1 + GELU -> fc2 + residual) for tiles of 8 patches (128 words) that stay
  in cache, its products through ATen's small-GEMM micro-kernels (``cpublas::brgemm``). Its
  backward keeps only the block's input words and recomputes each tile's activations.
- ``csrc/word_attention.cpp``: the attention alone (head width 6, 8 or 10), each (patch, head)
  problem solved in registers, reading q, k and v in place from the projections; its backward
  recomputes the 16 x 16 probabilities.

Under CPU autocast the fused inner transformer still computes in float32 (its input words and
weights are float32; autocast allows the higher precision), while the word-attention kernel,
which would get half-precision projections, leaves the attention to the reference.

Each kernel has a contract (:func:`inner_unsupported`, :func:`word_attention_unsupported`) that
says why it cannot run an input, and a reference beside it in :mod:`tnt_mm.ops.reference`
(outputs and gradients equal within float rounding, tested to 1e-5). Which one runs is decided
in :mod:`tnt_mm.ops.dispatch` only. Double backward is not supported (it raises).

The kernels are compiled with the machine's C++ compiler (``torch.utils.cpp_extension``, about
40 s once; cached in ``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``).
"""
import hashlib
import logging
import os.path as osp
import platform
import warnings
from typing import List, Optional

import torch

from .params import InnerTransformerParams
from .reference import graph_capture

CSRC = osp.join(osp.dirname(osp.abspath(__file__)), 'csrc')
SOURCES = [osp.join(CSRC, name) for name in ('word_attention.cpp', 'inner_transformer.cpp')]
HEADERS = [osp.join(CSRC, name) for name in ('word_attention.h', 'fast_math.h')]
WORDS = 16
# head widths of the word-attention kernel
HEAD_DIMS = (6, 8, 10)
# (word width, head width) pairs of the fused inner transformer: TNT-Ti, TNT-S, TNT-B
INNER_SHAPES = ((12, 6), (24, 6), (40, 10))
MLP_RATIO = 4

_extension = None  # the loaded module; False once building failed
_build_error: Optional[str] = None


def _build_tag() -> str:
    """A short digest of the CPU's instruction-set flags, of the headers and of where the
    sources are. The kernel is built for the CPU it runs on (``-march=native``); torch caches
    builds by name, so a home directory shared by different machines needs one name per kind
    of CPU. torch rebuilds when a source file changes, but does not look at the headers they
    include. Its build file names the sources by absolute path, so two checkouts sharing one
    name would rebuild each other's module on every switch (40 s each)."""
    tag = platform.machine() + CSRC
    try:
        with open('/proc/cpuinfo') as f:
            tag += next((line for line in f if line.startswith('flags')), '')
    except OSError:
        tag += platform.processor()
    for header in HEADERS:
        with open(header) as f:
            tag += f.read()
    return hashlib.sha1(tag.encode()).hexdigest()[:10]


def load_extension() -> Optional[object]:
    """The compiled kernel module, building it on the first call; None if it cannot be built
    (a warning says why, once)."""
    global _extension, _build_error
    if _extension is None:
        try:
            # its import warns that no CUDA runtime exists: irrelevant to a CPU kernel
            cpp_logger = logging.getLogger('torch.utils.cpp_extension')
            level = cpp_logger.level
            cpp_logger.setLevel(logging.ERROR)
            try:
                from torch.utils.cpp_extension import load
            finally:
                cpp_logger.setLevel(level)
            logging.getLogger(__name__).info(
                'loading the fused CPU inner-transformer kernels (built once per machine, ~40 s)')
            _extension = load(
                name=f'tnt_mm_cpu_kernels_{_build_tag()}',
                sources=SOURCES,
                # -fopenmp: at::parallel_for is OpenMP in torch's headers; the module then shares
                # torch's libgomp (same soname) and its thread count. -ffast-math lets GCC call
                # glibc's vectorised expf.
                extra_cflags=['-O3', '-march=native', '-ffast-math', '-fopenmp'],
                extra_ldflags=['-fopenmp'],
                verbose=False)
        except Exception as error:  # no compiler, no ninja, read-only cache, ...
            _build_error = f'{type(error).__name__}: {error}'
            warnings.warn(
                f'could not build the fused CPU inner-transformer kernels ({_build_error}); '
                f'TNT uses the reference implementation instead: same outputs, slower on the '
                f'CPU. Set TNT_MM_INNER_BACKEND=reference to skip the attempt.')
            _extension = False
    return _extension or None


# ------------------------------------------------------------------------------- contracts
def _unsupported(x: torch.Tensor) -> List[str]:
    """What every kernel needs: CPU float32 (N, 16, C) tensors, eager mode (graphs and exported
    programs keep the reference ops), and a built extension."""
    reasons = []
    if x.device.type != 'cpu':
        reasons.append(f'the input is on {x.device}, the kernels run on the CPU')
    if x.dtype != torch.float32:
        reasons.append(f'the input is {x.dtype}, the kernels take torch.float32')
    if x.dim() != 3 or x.shape[1] != WORDS:
        reasons.append(f'the input has shape {tuple(x.shape)}, the kernels take (N, {WORDS}, C)')
    capturing = graph_capture()
    if capturing:
        reasons.append(capturing)
    # built only where it would run (a CPU input): the first build compiles C++
    if not reasons and load_extension() is None:
        reasons.append(f'the extension could not be built ({_build_error})')
    return reasons


def _first(reasons: List[str]) -> Optional[str]:
    return reasons[0] if reasons else None


def word_attention_unsupported_reasons(x: torch.Tensor, head_dim: int,
                                       dropout_p: float = 0.) -> List[str]:
    """Every reason why :func:`word_attention` cannot compute the attention for the words
    ``x`` (N, 16, C) with heads ``head_dim`` wide and dropout ``dropout_p`` on the weights;
    empty if it can."""
    reasons = []
    if head_dim not in HEAD_DIMS:
        reasons.append(f'head width {head_dim} is not one of {HEAD_DIMS}')
    if dropout_p:
        reasons.append(f'attention dropout {dropout_p} (the kernel has none)')
    if torch.is_autocast_enabled('cpu'):
        # the q|k and v projections before it come out of autocast in half precision
        reasons.append(f'CPU autocast gives the kernel {torch.get_autocast_dtype("cpu")} '
                       f'projections; it takes float32')
    return reasons + _unsupported(x)


def word_attention_unsupported(x: torch.Tensor, head_dim: int,
                               dropout_p: float = 0.) -> Optional[str]:
    """The first of :func:`word_attention_unsupported_reasons`; None if the kernel can run."""
    return _first(word_attention_unsupported_reasons(x, head_dim, dropout_p))


def inner_unsupported_reasons(words: torch.Tensor, params: InnerTransformerParams,
                              training: bool) -> List[str]:
    """Every reason why :func:`inner_transformer` cannot run this inner transformer; empty if
    it can."""
    reasons = []
    width = words.shape[-1]
    if (width, params.head_dim) not in INNER_SHAPES:
        reasons.append(f'(word width, head width) = ({width}, {params.head_dim}) is not one of '
                       f'{INNER_SHAPES}')
    if params.qk_bias is not None or params.v_bias is not None:
        reasons.append('the qkv Linears have a bias (the kernel has none)')
    if params.fc1_weight.shape[0] != MLP_RATIO * width:
        reasons.append(f'the MLP is {params.fc1_weight.shape[0]} wide, the kernel computes '
                       f'{MLP_RATIO} x {width}')
    if training and params.has_dropout:
        reasons.append('dropout or stochastic depth in training (the kernel has neither)')
    return reasons + _unsupported(words)


def inner_unsupported(words: torch.Tensor, params: InnerTransformerParams,
                      training: bool) -> Optional[str]:
    """The first of :func:`inner_unsupported_reasons`; None if the kernel can run."""
    return _first(inner_unsupported_reasons(words, params, training))


# ------------------------------------------------------------------------------- kernels
class _WordAttention(torch.autograd.Function):
    """The kernel as an autograd op: only qk and v are kept for the backward pass."""

    @staticmethod
    def forward(ctx, qk: torch.Tensor, v: torch.Tensor, num_heads: int,
                scale: float) -> torch.Tensor:
        ctx.save_for_backward(qk, v)
        ctx.num_heads, ctx.scale = num_heads, scale
        return load_extension().word_attention(qk, v, num_heads, scale)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        qk, v = ctx.saved_tensors
        grad_qk, grad_v = load_extension().word_attention_backward(
            qk, v, grad_out, ctx.num_heads, ctx.scale)
        return grad_qk, grad_v, None, None


def word_attention(qk: torch.Tensor, v: torch.Tensor, num_heads: int,
                   dropout_p: float = 0.) -> torch.Tensor:
    """The kernel of :func:`tnt_mm.ops.reference.word_attention` (same arguments; dropout must
    be 0). Differentiable with respect to ``qk`` and ``v``."""
    assert not dropout_p, 'the word-attention kernel has no dropout'
    scale = (v.shape[-1] // num_heads) ** -0.5
    if torch.is_grad_enabled() and (qk.requires_grad or v.requires_grad):
        return _WordAttention.apply(qk, v, num_heads, scale)
    # named for torch.profiler, which does not see a call into the extension by itself (the
    # autograd path shows up as _WordAttention)
    with torch.profiler.record_function('tnt_mm::word_attention'):
        return load_extension().word_attention(qk, v, num_heads, scale)


class _InnerTransformer(torch.autograd.Function):
    """The fused inner transformer as an autograd op: only the words (and the weights) are kept
    for the backward pass, which recomputes the activations."""

    @staticmethod
    def forward(ctx, words: torch.Tensor, num_heads: int, eps: float,
                *weights: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(words, *weights)
        ctx.num_heads, ctx.eps = num_heads, eps
        return load_extension().inner_transformer_forward(words, list(weights), num_heads, eps)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        words, *weights = ctx.saved_tensors
        grads = load_extension().inner_transformer_backward(words, grad_out, weights,
                                                            ctx.num_heads, ctx.eps)
        return (grads[0], None, None, *grads[1:])


def _kernel_weights(p: InnerTransformerParams) -> List[torch.Tensor]:
    """The weights in the order ``csrc/inner_transformer.cpp`` reads them. [Wq; Wk; Wv] is
    stacked so that one product computes the three and the attention reads them in place."""
    w_qkv = torch.cat([p.qk_weight, p.v_weight])
    return [p.norm1_weight, p.norm1_bias, w_qkv, p.proj_weight, p.proj_bias, p.norm2_weight,
            p.norm2_bias, p.fc1_weight, p.fc1_bias, p.fc2_weight, p.fc2_bias]


def inner_transformer(words: torch.Tensor, params: InnerTransformerParams) -> torch.Tensor:
    """The kernel of :func:`tnt_mm.ops.reference.inner_transformer` (no dropout) on ``words``
    (N, 16, c), in one pass. Differentiable with respect to the words and every weight; the
    backward recomputes the activations from the words."""
    weights = _kernel_weights(params)
    if torch.is_grad_enabled() and (words.requires_grad or any(w.requires_grad for w in weights)):
        return _InnerTransformer.apply(words, params.num_heads, params.eps, *weights)
    with torch.profiler.record_function('tnt_mm::inner_transformer'):
        return load_extension().inner_transformer_forward(words, weights, params.num_heads,
                                                          params.eps)
