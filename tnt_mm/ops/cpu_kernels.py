"""Fused CPU kernels for TNT's inner transformer, forward and backward, built on first use.

The inner transformer works on the 16 words of every patch, 12-40 channels wide, with heads 6
(TNT-Ti/S) or 10 (TNT-B) wide: tens of thousands of tiny problems per image, which PyTorch runs
as many small, memory-bound ops (layer norm, three projections, SDPA through permute copies,
GELU, two more products, each writing its activations out). Two kernels replace them:

- ``csrc/inner_transformer.cpp``: the whole inner transformer (LN -> qkv -> attention -> proj
  + residual -> LN -> fc1 + GELU -> fc2 + residual) for tiles of 8 patches (128 words) that stay
  in cache, its products through ATen's small-GEMM micro-kernels (``cpublas::brgemm``). Its
  backward keeps only the block's input words and recomputes each tile's activations. TNT-S,
  224, batch 8, 2 threads: 6.0 against 14.3 ms forward, 20.5 against 51.2 ms forward + backward
  (against the reference modules; README.md, Speed and memory).
  Used for the paper's widths (:data:`INNER_SHAPES`) when the block has no qkv bias, exact GELU
  and, in training, no dropout or stochastic depth.
- ``csrc/word_attention.cpp``: the attention alone for other widths (head width 6, 8 or 10):
  each (patch, head) problem solved in registers, reading q, k and v in place from the
  projections, 3x faster than SDPA; its backward recomputes the 16 x 16 probabilities.

Scope, so that numbers never change: float32 CPU tensors, 16 words, not under ``torch.jit``
tracing or ``torch.compile``/``torch.export`` (FLOP counting and compiled graphs see the
reference modules). Outputs and gradients equal the reference within float rounding (tested to
1e-5); double backward is not supported (it raises).

The kernels are compiled with the C++ compiler of the machine (``torch.utils.cpp_extension``,
about 40 s once; cached in ``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``).
Where they cannot be built, a warning says why and the reference modules are used.
``TNT_MM_WORD_KERNEL=0`` turns both off; :func:`reference_attention` does so for a block of code.
"""
import contextlib
import hashlib
import logging
import os
import os.path as osp
import platform
import warnings
from typing import Optional, Sequence

import torch

CSRC = osp.join(osp.dirname(osp.abspath(__file__)), 'csrc')
SOURCES = [osp.join(CSRC, name) for name in ('word_attention.cpp', 'inner_transformer.cpp')]
HEADERS = [osp.join(CSRC, name) for name in ('word_attention.h', 'fast_math.h')]
WORDS = 16
HEAD_DIMS = (6, 8, 10)
# (word width, head width) pairs of the fused inner transformer: TNT-Ti, TNT-S, TNT-B
INNER_SHAPES = ((12, 6), (24, 6), (40, 10))
ENV_SWITCH = 'TNT_MM_WORD_KERNEL'

_extension = None  # the loaded module; False once building failed or was switched off
_reference_depth = 0  # > 0 inside reference_attention()


def _build_tag() -> str:
    """A short digest of the CPU's instruction-set flags and of the headers. The kernel is
    built for the CPU it runs on (``-march=native``); torch caches builds by name, so a home
    directory shared by different machines needs one name per kind of CPU. torch rebuilds when
    a source file changes, but does not look at the headers they include."""
    tag = platform.machine()
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
    """The compiled kernel module, building it on the first call; None if unavailable."""
    global _extension
    if _extension is None:
        if os.environ.get(ENV_SWITCH, '1') == '0':
            _extension = False
            return None
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
            warnings.warn(
                f'could not build the fused CPU inner-transformer kernels ({type(error).__name__}: '
                f'{error}); TNT uses its reference modules instead: same outputs, slower on '
                f'the CPU. Set {ENV_SWITCH}=0 to skip the attempt.')
            _extension = False
    return _extension or None


def _compiling() -> bool:
    """Under torch.compile or torch.export (graphs and exported programs keep the reference
    op); both checks exist only in newer torch versions."""
    return any(getattr(torch.compiler, name, lambda: False)()
               for name in ('is_compiling', 'is_exporting'))


@contextlib.contextmanager
def reference_attention():
    """Within this context TNT runs its inner transformer through the reference modules (and
    ``scaled_dot_product_attention``) instead of the fused kernels: the A/B row of
    ``tools/analysis/benchmark.py``, and what hooks on those modules need."""
    global _reference_depth
    _reference_depth += 1
    try:
        yield
    finally:
        _reference_depth -= 1


def _kernels_may_run(x: torch.Tensor) -> bool:
    """The conditions every kernel shares: CPU float32 words of 16 per patch, outside the
    reference context, tracing, scripting and compiling, and a built extension."""
    if (x.device.type != 'cpu' or x.dtype != torch.float32 or x.dim() != 3
            or x.shape[1] != WORDS or _reference_depth):
        return False
    if torch.jit.is_tracing() or torch.jit.is_scripting() or _compiling():
        return False
    return load_extension() is not None


def kernel_applies(x: torch.Tensor, head_dim: int, attn_drop: float = 0.) -> bool:
    """Whether :func:`word_attention` may replace the reference op for input ``x`` (B, L, C),
    with dropout ``attn_drop`` on the attention weights (the kernel has none)."""
    return head_dim in HEAD_DIMS and attn_drop == 0 and _kernels_may_run(x)


def inner_kernel_applies(x: torch.Tensor, head_dim: int) -> bool:
    """Whether :func:`inner_transformer` may run the inner transformer for words ``x``
    (N, 16, c). The caller checks what only the module knows (no dropout, exact GELU, ...)."""
    return (x.dim() == 3 and (x.shape[-1], head_dim) in INNER_SHAPES
            and _kernels_may_run(x))


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


def word_attention(qk: torch.Tensor, v: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Attention over 16 words: ``qk`` (N, 16, 2C) = [q | k] as the ``qk`` Linear writes it,
    ``v`` (N, 16, C); returns (N, 16, C), heads concatenated. Scale 1/sqrt(C / num_heads).
    Differentiable with respect to ``qk`` and ``v``."""
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


def inner_transformer(words: torch.Tensor, weights: Sequence[torch.Tensor], num_heads: int,
                      eps: float) -> torch.Tensor:
    """The TNT inner transformer (pre-norm attention and MLP, both residual, exact GELU, no
    dropout) on ``words`` (N, 16, c) in one pass. ``weights``, in this order: the first norm's
    weight and bias, Wqkv (3c, c) = [Wq; Wk; Wv] (no bias), the attention projection's weight
    and bias, the second norm's weight and bias, fc1 (4c, c) and its bias, fc2 (c, 4c) and its
    bias; both norms use ``eps``. Differentiable with respect to the words and every weight."""
    if torch.is_grad_enabled() and (words.requires_grad or any(w.requires_grad for w in weights)):
        return _InnerTransformer.apply(words, num_heads, eps, *weights)
    with torch.profiler.record_function('tnt_mm::inner_transformer'):
        return load_extension().inner_transformer_forward(words, list(weights), num_heads, eps)
