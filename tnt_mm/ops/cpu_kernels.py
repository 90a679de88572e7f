"""A fused CPU kernel for TNT's inner (word) attention at inference, built on first use.

The inner transformer attends over the 16 words of every patch with heads 6 (TNT-Ti/S) or 10
(TNT-B) wide: tens of thousands of tiny problems per image. ``scaled_dot_product_attention``
solves them through generic kernels and permute copies and, on a CPU, costs more than the
block's outer MLP; ``csrc/word_attention.cpp`` solves each (patch, head) problem in registers,
reading q, k and v in place from the projections (3x faster at TNT-S, 224, batch 8).

Scope, so that numbers never change: float32 CPU tensors, 16 words, head width 6, 8 or 10, no
autograd (training keeps ``scaled_dot_product_attention`` and its backward), not under
``torch.jit`` tracing or ``torch.compile`` (FLOP counting and compiled graphs see the reference
op). Outputs equal the reference within float rounding (tested to 1e-5).

The kernel is compiled with the C++ compiler of the machine (``torch.utils.cpp_extension``,
about 40 s once; cached in ``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``).
Where it cannot be built, a warning says why and the reference op is used.
``TNT_MM_WORD_KERNEL=0`` turns the kernel off.
"""
import contextlib
import hashlib
import logging
import os
import os.path as osp
import platform
import warnings
from typing import Optional

import torch

SOURCE = osp.join(osp.dirname(osp.abspath(__file__)), 'csrc', 'word_attention.cpp')
WORDS = 16
HEAD_DIMS = (6, 8, 10)
ENV_SWITCH = 'TNT_MM_WORD_KERNEL'

_extension = None  # the loaded module; False once building failed or was switched off
_reference_depth = 0  # > 0 inside reference_attention()


def _cpu_tag() -> str:
    """A short digest of the CPU's instruction-set flags. The kernel is built for the CPU it
    runs on (``-march=native``); torch caches builds by name, so a home directory shared by
    different machines needs one name per kind of CPU."""
    flags = platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            flags += next((line for line in f if line.startswith('flags')), '')
    except OSError:
        flags += platform.processor()
    return hashlib.sha1(flags.encode()).hexdigest()[:10]


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
                'loading the fused CPU word-attention kernel (built once per machine, ~40 s)')
            _extension = load(
                name=f'tnt_mm_word_attention_{_cpu_tag()}',
                sources=[SOURCE],
                # -fopenmp: at::parallel_for is OpenMP in torch's headers; the module then shares
                # torch's libgomp (same soname) and its thread count. -ffast-math lets GCC call
                # glibc's vectorised expf.
                extra_cflags=['-O3', '-march=native', '-ffast-math', '-fopenmp'],
                extra_ldflags=['-fopenmp'],
                verbose=False)
        except Exception as error:  # no compiler, no ninja, read-only cache, ...
            warnings.warn(
                f'could not build the fused CPU word-attention kernel ({type(error).__name__}: '
                f'{error}); TNT uses scaled_dot_product_attention instead: same outputs, slower '
                f'CPU inference. Set {ENV_SWITCH}=0 to skip the attempt.')
            _extension = False
    return _extension or None


def _compiling() -> bool:
    """Under torch.compile or torch.export (graphs and exported programs keep the reference
    op); both checks exist only in newer torch versions."""
    return any(getattr(torch.compiler, name, lambda: False)()
               for name in ('is_compiling', 'is_exporting'))


@contextlib.contextmanager
def reference_attention():
    """Within this context TNT uses ``scaled_dot_product_attention`` for the words too: the
    A/B row of ``tools/analysis/benchmark.py``."""
    global _reference_depth
    _reference_depth += 1
    try:
        yield
    finally:
        _reference_depth -= 1


def kernel_applies(x: torch.Tensor, head_dim: int) -> bool:
    """Whether :func:`word_attention` may replace the reference op for input ``x`` (B, L, C)."""
    if (x.device.type != 'cpu' or x.dtype != torch.float32 or x.shape[1] != WORDS
            or head_dim not in HEAD_DIMS or torch.is_grad_enabled() or _reference_depth):
        return False
    if torch.jit.is_tracing() or torch.jit.is_scripting() or _compiling():
        return False
    return load_extension() is not None


def word_attention(qk: torch.Tensor, v: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Attention over 16 words: ``qk`` (N, 16, 2C) = [q | k] as the ``qk`` Linear writes it,
    ``v`` (N, 16, C); returns (N, 16, C), heads concatenated. Scale 1/sqrt(C / num_heads)."""
    head_dim = v.shape[-1] // num_heads
    return load_extension().word_attention(qk, v, num_heads, head_dim ** -0.5)
