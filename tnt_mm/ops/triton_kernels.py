"""The fused inner transformer for GPUs, in Triton (kernels in :mod:`.triton_inner`).

``auto`` picks it for CUDA tensors it can run. Its outputs and gradients equal the
reference's on an H200 (``tools/analysis/check_triton_gpu.py``) and, in the test suite, under
Triton's interpreter (``TRITON_INTERPRET=1``, CPU tensors); the kernels compile for sm_80 and
sm_90 without a GPU (``tools/analysis/compile_triton_kernels.py``).

What it computes: :func:`tnt_mm.ops.reference.inner_transformer`, with stochastic depth, without
dropout, for float32, float16 and bfloat16 words, under autocast too (the products then take
the autocast dtype, everything else stays float32). The backward pass keeps only the words and
recomputes the activations, as the CPU kernel does.
"""
import contextlib
import functools
import os
from types import MappingProxyType
from typing import Iterator, List, Mapping, NamedTuple, Optional, Tuple

import torch

from .amp import autocast_dtype
from .params import InnerTransformerParams
from .reference import graph_capture

WORDS = 16
HEAD_BLOCK = 16  # the head width is padded to this (tl.dot needs every dimension >= 16)
HIDDEN_BLOCK = 32  # MLP hidden units per chunk
MAX_WIDTH = 64  # widest word row one program holds (TNT-B's 40 pads to 64)
DTYPES = (torch.float32, torch.float16, torch.bfloat16)

_import_error: Optional[str] = None


# The two probes are constants of the process; graphs take their value rather than trace them.
@torch.compiler.assume_constant_result
def interpreting() -> bool:
    """Whether the kernels run in Triton's interpreter: as they were defined if they have been,
    else as ``TRITON_INTERPRET`` says."""
    import sys
    import triton
    module = sys.modules.get(f'{__package__}.triton_inner')
    if module is not None:
        return type(module.inner_transformer_fwd).__name__ == 'InterpretedFunction'
    return bool(triton.knobs.runtime.interpret)


def kernels():
    """The kernel module, imported on first use (tnt_mm imports Triton only for this backend).

    Triton decides between compiling and interpreting when a kernel is defined, and defines
    its own library functions (``tl.sum``, ...) when it is first imported: for the
    interpreter, ``TRITON_INTERPRET=1`` must be set before anything imports Triton.
    """
    from . import triton_inner
    return triton_inner


def fix_interpreter_bf16() -> None:
    """Make Triton's interpreter compute bfloat16 as a GPU does, where a probe shows it does
    not (Triton 3.8 and before); an explicit call, for tests (``tests/conftest.py``): importing
    or running this package never patches Triton. The interpreter keeps bfloat16 as uint16 bit
    patterns, and

    - its ``tl.dot`` multiplies those patterns as integers: bfloat16 operands are widened to
      float32 first (a GPU's bfloat16 MMA: exact products, float32 sums);
    - its float32 -> bfloat16 cast truncates, where the GPU rounds to nearest even (twice the
      error): the cast goes through torch's, which rounds.

    Only the interpreter, a testing tool, is touched."""
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter
    builder, handle = interpreter.InterpreterBuilder, interpreter.TensorHandle
    if getattr(builder, '_tnt_mm_bf16', False):
        return
    builder._tnt_mm_bf16 = True

    def to_float32(h):
        data = torch.from_numpy(np.ascontiguousarray(h.data).view(np.int16))
        return handle(data.view(torch.bfloat16).float().numpy(), tl.float32)

    def to_bfloat16(h):
        data = torch.from_numpy(np.ascontiguousarray(h.data, dtype=np.float32))
        return handle(data.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16),
                      tl.bfloat16)

    one = handle(np.full((16, 16), 0x3F80, dtype=np.uint16), tl.bfloat16)
    zero = handle(np.zeros((16, 16), dtype=np.float32), tl.float32)
    if not np.allclose(builder.create_dot(None, one, one, zero, None, None).data, 16.):
        create_dot = builder.create_dot

        def create_dot_bf16(self, a, b, d, input_precision, max_num_imprecise_acc):
            a, b = (to_float32(x) if x.dtype.scalar == tl.bfloat16 else x for x in (a, b))
            return create_dot(self, a, b, d, input_precision, max_num_imprecise_acc)

        builder.create_dot = create_dot_bf16

    above_half_way = handle(np.array([1 + 3 * 2 ** -9], dtype=np.float32), tl.float32)
    if builder.cast_impl(None, above_half_way, tl.bfloat16).data[0] != 0x3F81:
        cast_impl = builder.cast_impl

        def cast_impl_bf16(self, src, dst_type):
            if src.dtype.scalar == tl.float32 and dst_type.scalar == tl.bfloat16:
                return to_bfloat16(src)
            return cast_impl(self, src, dst_type)

        builder.cast_impl = cast_impl_bf16  # create_fp_trunc calls it


@torch.compiler.assume_constant_result
def _triton_missing() -> Optional[str]:
    global _import_error
    if _import_error is None:
        try:
            import triton  # noqa: F401
            _import_error = ''
        except Exception as error:  # not installed, or a broken install
            _import_error = f'{type(error).__name__}: {error}'
    return _import_error or None


def built_for(device: torch.device) -> bool:
    """Whether ``auto`` may pick the kernels on ``device``: NVIDIA GPUs of compute capability
    8.0 or later, which they were compiled and checked for (TF32 and bfloat16 products need
    it)."""
    return (device.type == 'cuda' and torch.version.hip is None
            and torch.cuda.get_device_capability(device) >= (8, 0))


def _platform_reasons(tensor: torch.Tensor, subject: str) -> List[str]:
    """Why no Triton kernel can take ``tensor`` here: Triton missing, or not a CUDA tensor
    outside the interpreter; ``subject`` names it in the message ('the input is')."""
    reasons = []
    missing = _triton_missing()
    if missing:
        reasons.append(f'Triton cannot be imported ({missing})')
    if tensor.device.type != 'cuda' and not interpreting():
        reasons.append(f'{subject} on {tensor.device}; the Triton kernels run on CUDA tensors '
                       f'(on CPU tensors only in Triton\'s interpreter, TRITON_INTERPRET=1)')
    return reasons


def inner_unsupported_reasons(words: torch.Tensor, params: InnerTransformerParams,
                              training: bool) -> List[str]:
    """Every reason why :func:`inner_transformer` cannot run this inner transformer; empty if
    it can."""
    reasons = _platform_reasons(words, 'the input is')
    if words.dtype not in DTYPES:
        reasons.append(f'the input is {words.dtype}, the kernels take one of {DTYPES}')
    if words.dim() != 3 or words.shape[1] != WORDS:
        reasons.append(f'the input has shape {tuple(words.shape)}, the kernels take '
                       f'(N, {WORDS}, C)')
    if words.shape[-1] > MAX_WIDTH:
        reasons.append(f'word width {words.shape[-1]} is wider than the kernels\' {MAX_WIDTH}')
    if params.head_dim > HEAD_BLOCK:
        reasons.append(f'head width {params.head_dim} is wider than the kernels\' {HEAD_BLOCK}')
    if params.qk_bias is not None or params.v_bias is not None:
        reasons.append('the qkv Linears have a bias (the kernels have none)')
    if training and (params.attn_drop or params.drop):
        reasons.append('dropout in training (the kernels have stochastic depth but no dropout)')
    if words.numel() >= 2 ** 31:
        reasons.append(f'the input has {words.numel()} elements; the kernels index with 32 bits')
    # torch.compile graphs call the kernels as custom ops (_forward_op); other graphs cannot
    if not (torch.compiler.is_compiling() and not torch.compiler.is_exporting()):
        capturing = graph_capture()
        if capturing:
            reasons.append(capturing)
    return reasons


def inner_unsupported(words: torch.Tensor, params: InnerTransformerParams,
                      training: bool) -> Optional[str]:
    """The first reason why :func:`inner_transformer` cannot run this inner transformer; None
    if it can."""
    reasons = inner_unsupported_reasons(words, params, training)
    return reasons[0] if reasons else None


def _compute_dtype(words: torch.Tensor) -> torch.dtype:
    """The products' input dtype: autocast's where it is on, else the words'."""
    return autocast_dtype(words.device.type) or words.dtype


def _next_power_of_2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def launch_config(width: int, params: InnerTransformerParams, dtype: torch.dtype) -> Mapping:
    """The compile-time arguments of both kernels (the AOT compile test uses them too)."""
    return _config(width, params.num_heads, params.head_dim, params.fc1_weight.shape[0], dtype,
                   torch.backends.cuda.matmul.allow_tf32)


def _weights_config(width: int, weights: List[torch.Tensor], num_heads: int,
                    dtype: torch.dtype) -> Mapping:
    """:func:`launch_config` from the kernels' weight list (``v_weight`` (c, c) gives the head
    width, ``fc1_weight`` (h, c) the MLP's)."""
    return _config(width, num_heads, weights[3].shape[0] // num_heads, weights[8].shape[0],
                   dtype, torch.backends.cuda.matmul.allow_tf32)


# Every block of every step asks for one of a handful of configs: built once each.
@functools.lru_cache(maxsize=None)
def _config(width: int, num_heads: int, head_dim: int, hidden: int, dtype: torch.dtype,
            allow_tf32: bool) -> Mapping:
    import triton.language as tl
    tl_dtype = {torch.float32: tl.float32, torch.float16: tl.float16,
                torch.bfloat16: tl.bfloat16}[dtype]
    # float32 products on tensor cores: TF32 where torch allows it for matmuls (as cuBLAS then
    # computes the reference), else three TF32 products that together keep float32 accuracy
    # ('ieee' would unroll every product into scalar FMAs: megabytes of code, minutes of ptxas)
    precision = 'tf32' if allow_tf32 else 'tf32x3'
    return MappingProxyType(dict(
        C=width, CP=max(16, _next_power_of_2(width)), HEADS=num_heads, HD=head_dim,
        D=HEAD_BLOCK, HID=hidden, BH=HIDDEN_BLOCK, DT=tl_dtype, PREC=precision))


def _weights(p: InnerTransformerParams) -> List[torch.Tensor]:
    """The weights in the kernels' argument order."""
    return [w.contiguous() for w in (
        p.norm1_weight, p.norm1_bias, p.qk_weight, p.v_weight, p.proj_weight, p.proj_bias,
        p.norm2_weight, p.norm2_bias, p.fc1_weight, p.fc1_bias, p.fc2_weight, p.fc2_bias)]


def _backward_programs(words: torch.Tensor, tiles: int) -> int:
    """Programs of the backward kernel: each owns one slot of weight gradients, so enough to
    fill the GPU a few times over, no more."""
    if words.device.type == 'cuda':
        return min(tiles, 4 * torch.cuda.get_device_properties(words.device).multi_processor_count)
    return min(tiles, 2)  # the interpreter: two, so that a program loops over several tiles


class Launch(NamedTuple):
    """One kernel launch, as :func:`_launch` runs it and :func:`compile_for_gpu` compiles it."""
    kernel: str
    grid: Tuple[int]
    args: list  # positional, in the kernel's order
    meta: dict  # the compile-time arguments
    num_warps: int
    # Software pipelining would double-buffer every weight tile the tile loop reloads (about
    # 200 KB of shared memory in the backward, more than an A100 has) for a loop whose body
    # is long enough to hide its own loads.
    num_stages: int = 1


class LaunchSettings(NamedTuple):
    """Patches per program and warps of the inner transformer's two kernels."""
    forward_patches: int
    forward_warps: int
    backward_patches: int
    backward_warps: int


def default_settings(config: Mapping) -> LaunchSettings:
    """Chosen from ptxas's report for sm_80 and checked on an H200: the forward fits its
    registers without spilling at 8 patches (4 warps up to 32 channels, 8 for TNT-B's 64); the
    backward holds about eight (16 P, CP) float32 tiles and still spills a few hundred bytes at
    4 patches, and TNT-B's float32 backward needs 2 to fit an A100's 163 KB of shared memory."""
    wide = config['CP'] > 32
    wide_float32 = wide and config['DT'].primitive_bitwidth == 32
    return LaunchSettings(8, 8 if wide else 4, 2 if wide_float32 else 4, 4)


def tuned_settings(config: Mapping) -> LaunchSettings:
    """What ``tools/analysis/tune_triton_kernels.py`` measured faster on an H200 (bfloat16,
    67,200 patches; docs/benchmark.md), where it measured them: in 16-bit dtypes the forward at
    4 patches x 4 warps for TNT-S's and TNT-B's widths (1.33x, 1.16x), the backward at 8
    patches for TNT-S's (1.18x); the default elsewhere (in float32 TNT-S's backward at 8 patches
    would take 192 KB of shared memory, more than an A100 gives a block)."""
    settings = default_settings(config)
    if config['DT'].primitive_bitwidth != 16 or config['CP'] < 32:
        return settings
    settings = settings._replace(forward_patches=4, forward_warps=4)
    return settings._replace(backward_patches=8) if config['CP'] == 32 else settings


LAUNCH_ENV = 'TNT_MM_TRITON_LAUNCH'
LAUNCH_CHOICES = {'default': default_settings, 'tuned': tuned_settings}
_launch_forced: list = []  # the stack of launch_settings() contexts


@contextlib.contextmanager
def launch_settings(choice) -> Iterator[None]:
    """Within the block the kernels launch with ``choice``'s settings: ``'default'``,
    ``'tuned'`` (opt-in until ``check_triton_gpu.py`` has passed with them on a GPU) or one
    :class:`LaunchSettings` for every width and dtype (the tuning tool's), whatever
    ``TNT_MM_TRITON_LAUNCH`` says (nestable)."""
    if not isinstance(choice, LaunchSettings) and choice not in LAUNCH_CHOICES:
        raise ValueError(f'launch settings {choice!r}: one of {sorted(LAUNCH_CHOICES)} or a '
                         f'LaunchSettings')
    _launch_forced.append(choice)
    try:
        yield
    finally:
        _launch_forced.pop()


def settings_for(config: Mapping) -> LaunchSettings:
    """The launch settings of a kernel config: the innermost :func:`launch_settings`, else
    ``TNT_MM_TRITON_LAUNCH`` (``default`` unless set)."""
    choice = _launch_forced[-1] if _launch_forced else os.environ.get(LAUNCH_ENV, 'default')
    if isinstance(choice, LaunchSettings):
        return choice
    if choice not in LAUNCH_CHOICES:
        raise ValueError(f'{LAUNCH_ENV}={choice!r}: one of {sorted(LAUNCH_CHOICES)}')
    return LAUNCH_CHOICES[choice](config)


def forward_launch(words, weights, keep, eps, config, norm=None,
                   normed_dtype=None) -> Tuple[Launch, torch.Tensor, Optional[torch.Tensor]]:
    """The forward kernel's launch, the tensor it writes the output to, and with ``norm``
    (weight, bias, eps of the patch LayerNorm over 16 x C) the one it writes the normalised
    output to, (N, 16 C) in ``normed_dtype``."""
    out = torch.empty_like(words)
    rows = words.shape[0] * WORDS
    keep_attn, keep_mlp = keep if keep is not None else (words, words)  # unread without
    normed = None
    norm_args = [words, words, words, 0.]  # unread without
    if norm is not None:
        normed = torch.empty(words.shape[0], WORDS * words.shape[-1], device=words.device,
                             dtype=normed_dtype or words.dtype)
        norm_args = [normed, norm[0], norm[1], norm[2]]
    settings = settings_for(config)
    return Launch(
        'inner_transformer_fwd', (_cdiv(rows, settings.forward_patches * WORDS),),
        [words, out, *weights, keep_attn, keep_mlp, *norm_args[:3], rows, eps,
         config['HD'] ** -0.5, norm_args[3]],
        dict(config, P=settings.forward_patches, HAS_DROP_PATH=keep is not None,
             FUSE_NORM=norm is not None),
        settings.forward_warps), out, normed


def backward_launch(words, grad_out, weights, keep, eps, config, norm=None, out=None,
                    grad_normed=None) -> Tuple[Launch, torch.Tensor, torch.Tensor]:
    """The backward kernel's launch, the tensor it writes the words' gradient to, and its
    weight-gradient slots: (programs, all the weights' elements) float32, one row a program,
    the weights one after another in each row (summed over the rows at once); with ``norm``
    the patch LayerNorm's weight and bias follow the twelve, and ``out`` (the forward's
    output) and ``grad_normed`` are read."""
    grad_words = torch.empty_like(words)
    rows = words.shape[0] * WORDS
    settings = settings_for(config)
    patches = settings.backward_patches
    tiles = _cdiv(rows, patches * WORDS)
    programs = _backward_programs(words, tiles)
    graded = list(weights) + ([norm[0], norm[1]] if norm is not None else [])
    sizes = [w.numel() for w in graded]
    # uninitialised: each program writes its row on its first tile
    slots = torch.empty(programs, sum(sizes), dtype=torch.float32, device=words.device)
    columns = list(slots[0].split_with_sizes(sizes))  # where each weight's gradient starts
    if norm is None:
        columns += [columns[0], columns[0]]  # unwritten without
        norm_args = [words, words, words, 0.]
    else:
        norm_args = [out, grad_normed, norm[0], norm[2]]
    keep_attn, keep_mlp = keep if keep is not None else (words, words)
    return Launch(
        'inner_transformer_bwd', (programs,),
        [words, grad_out, grad_words, *weights, keep_attn, keep_mlp, *norm_args[:3], *columns,
         slots.shape[1], rows, tiles, eps, config['HD'] ** -0.5, norm_args[3]],
        dict(config, P=patches, HAS_DROP_PATH=keep is not None, FUSE_NORM=norm is not None),
        settings.backward_warps), grad_words, slots


def _launch(launch: Launch) -> None:
    kernel = getattr(kernels(), launch.kernel)
    kernel[launch.grid](*launch.args, **launch.meta, num_warps=launch.num_warps,
                        num_stages=launch.num_stages)


def compile_for_gpu(launch: Launch, capability: int):
    """Compile ``launch``'s kernel ahead of time for a CUDA GPU of compute ``capability``
    (80: A100, 90: H100/H200), without one: what the GPU compiler checks and the interpreter
    does not (block shapes, dot sizes, shared memory) is checked here. Returns Triton's
    ``CompiledKernel`` (``.asm['cubin']``, ``.metadata``)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    if interpreting():
        raise RuntimeError('compiling for a GPU needs Triton without its interpreter: unset '
                           'TRITON_INTERPRET (before Triton is imported)')
    kernel = getattr(kernels(), launch.kernel)

    def type_of(value) -> str:
        if isinstance(value, torch.Tensor):
            return '*' + {torch.float32: 'fp32', torch.float16: 'fp16',
                          torch.bfloat16: 'bf16'}[value.dtype]
        return 'fp32' if isinstance(value, float) else 'i32'

    signature = {name: type_of(value) for name, value in zip(kernel.arg_names, launch.args)}
    signature.update({name: 'constexpr' for name in launch.meta})
    source = ASTSource(fn=kernel, signature=signature, constexprs=launch.meta)
    return triton.compile(source, target=GPUTarget('cuda', capability, 32),
                          options={'num_warps': launch.num_warps,
                                   'num_stages': launch.num_stages})


def _forward(words, weights, keep, eps, config) -> torch.Tensor:
    launch, out, _ = forward_launch(words.contiguous(), weights, keep, eps, config)
    _launch(launch)
    return out


def _backward(words, grad_out, weights, keep, eps, config, norm=None, out=None,
              grad_normed=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """The words' gradient, and every weight's gradient in one flat float32 tensor."""
    launch, grad_words, slots = backward_launch(
        words.contiguous(), grad_out.contiguous(), weights, keep, eps, config, norm, out,
        None if grad_normed is None else grad_normed.contiguous())
    _launch(launch)
    return grad_words, slots.sum(0)  # one sum for all the weights


def _weight_grads(flat: torch.Tensor, weights: List[torch.Tensor]) -> List[torch.Tensor]:
    """Each weight's gradient, a view of the flat one, in the weight's dtype (one cast)."""
    dtypes = {w.dtype for w in weights}
    if len(dtypes) == 1:
        flat = flat.to(dtypes.pop())
    grads = []
    for grad, weight in zip(flat.split_with_sizes([w.numel() for w in weights]), weights):
        if weight.dim() != 1:  # the pieces are flat: vectors (7 of 12) need no view op
            grad = grad.view(weight.shape)
        grads.append(grad if grad.dtype == weight.dtype else grad.to(weight.dtype))
    return grads


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _stochastic_depth_scales(words: torch.Tensor, p: float) -> torch.Tensor:
    """Per-patch scales of one residual branch, drawn as torchvision's ``stochastic_depth``
    (mode 'row') draws them, so that a seeded run keeps or drops the same patches."""
    survival = 1. - p
    noise = torch.empty(words.shape[0], dtype=torch.float32, device=words.device)
    noise.bernoulli_(survival)
    return noise.div_(survival) if survival > 0 else noise


# ------------------------------------------------------------------ autograd ops
# Two ways in, with the same launches. Eager code goes through a plain autograd.Function, the
# cheapest path per call on the host; torch.compile graphs, which cannot trace into the
# launches, keep the kernels as two opaque custom ops. Only the words, the weights and the
# stochastic depth draws are kept for the backward pass, which recomputes the activations; the
# backward itself is not differentiable.
@torch.library.custom_op('tnt_mm::triton_inner_forward', mutates_args=())
def _forward_op(words: torch.Tensor, weights: List[torch.Tensor],
                keep_attn: Optional[torch.Tensor], keep_mlp: Optional[torch.Tensor],
                num_heads: int, eps: float, dtype: torch.dtype) -> torch.Tensor:
    config = _weights_config(words.shape[-1], weights, num_heads, dtype)
    keep = None if keep_attn is None else (keep_attn, keep_mlp)
    return _forward(words, weights, keep, eps, config)


@torch.library.custom_op('tnt_mm::triton_inner_backward', mutates_args=())
def _backward_op(words: torch.Tensor, grad_out: torch.Tensor, weights: List[torch.Tensor],
                 keep_attn: Optional[torch.Tensor], keep_mlp: Optional[torch.Tensor],
                 num_heads: int, eps: float, dtype: torch.dtype) -> List[torch.Tensor]:
    """The words' gradient and the weights' in one flat tensor (a custom op's outputs may not
    be views of one another)."""
    config = _weights_config(words.shape[-1], weights, num_heads, dtype)
    keep = None if keep_attn is None else (keep_attn, keep_mlp)
    return list(_backward(words, grad_out, weights, keep, eps, config))


@_forward_op.register_fake
def _(words, *args):
    return torch.empty_like(words)


@_backward_op.register_fake
def _(words, grad_out, weights, *args):
    return [torch.empty_like(words),
            words.new_empty(sum(w.numel() for w in weights), dtype=torch.float32)]


def _setup_context(ctx, inputs, output) -> None:
    words, weights, keep_attn, keep_mlp, num_heads, eps, dtype = inputs
    ctx.save_for_backward(words, keep_attn, keep_mlp, *weights)
    ctx.settings = num_heads, eps, dtype


def _op_backward(ctx, grad_out):
    words, keep_attn, keep_mlp, *weights = ctx.saved_tensors
    grad_words, flat = _backward_op(words, grad_out.contiguous(), weights, keep_attn, keep_mlp,
                                    *ctx.settings)
    return grad_words, _weight_grads(flat, weights), None, None, None, None, None


_forward_op.register_autograd(_op_backward, setup_context=_setup_context)


class _InnerTransformer(torch.autograd.Function):
    """The eager path: :func:`_forward` and :func:`_backward` without the custom-op layer."""

    @staticmethod
    def forward(ctx, words, keep_attn, keep_mlp, num_heads, eps, dtype, *weights):
        weights = list(weights)
        config = _weights_config(words.shape[-1], weights, num_heads, dtype)
        keep = None if keep_attn is None else (keep_attn, keep_mlp)
        ctx.save_for_backward(words, keep_attn, keep_mlp, *weights)
        ctx.settings = config, eps
        return _forward(words, weights, keep, eps, config)

    @staticmethod
    def backward(ctx, grad_out):
        _refuse_double_backward()
        words, keep_attn, keep_mlp, *weights = ctx.saved_tensors
        config, eps = ctx.settings
        keep = None if keep_attn is None else (keep_attn, keep_mlp)
        grad_words, flat = _backward(words, grad_out, weights, keep, eps, config)
        return (grad_words, None, None, None, None, None, *_weight_grads(flat, weights))


class _InnerTransformerNormed(torch.autograd.Function):
    """The eager path with the words -> sentence LayerNorm in the kernels: returns the words
    and their patch LayerNorm ((N, 16 C), in the products' dtype); the last two weights are
    the norm's."""

    @staticmethod
    def forward(ctx, words, keep_attn, keep_mlp, num_heads, eps, dtype, norm_eps, *weights):
        weights, norm = list(weights[:-2]), (weights[-2], weights[-1], norm_eps)
        config = _weights_config(words.shape[-1], weights, num_heads, dtype)
        keep = None if keep_attn is None else (keep_attn, keep_mlp)
        launch, out, normed = forward_launch(words, weights, keep, eps, config, norm, dtype)
        _launch(launch)
        ctx.save_for_backward(words, out, keep_attn, keep_mlp, *weights, *norm[:2])
        ctx.settings = config, eps, norm_eps
        return out, normed

    @staticmethod
    def backward(ctx, grad_out, grad_normed):
        _refuse_double_backward()
        words, out, keep_attn, keep_mlp, *weights = ctx.saved_tensors
        config, eps, norm_eps = ctx.settings
        keep = None if keep_attn is None else (keep_attn, keep_mlp)
        weights, norm = weights[:-2], (weights[-2], weights[-1], norm_eps)
        grad_words, flat = _backward(words, grad_out, weights, keep, eps, config, norm, out,
                                     grad_normed)
        return (grad_words, None, None, None, None, None, None,
                *_weight_grads(flat, weights + list(norm[:2])))


def _refuse_double_backward() -> None:
    if torch.is_grad_enabled():  # create_graph=True: a second derivative was asked for
        raise RuntimeError('double backward through the Triton inner transformer is not '
                           'supported; use the reference backend (TNT_MM_INNER_BACKEND='
                           'reference) for higher-order gradients')


FUSED_NORM_ENV = 'TNT_MM_TRITON_FUSED_NORM'
_fused_norm_forced: List[bool] = []  # the stack of fused_norm() contexts


@contextlib.contextmanager
def fused_norm(enabled: bool = True) -> Iterator[None]:
    """Within the block, the kernels compute the words -> sentence LayerNorm (``enabled``) or
    leave it to PyTorch, whatever ``TNT_MM_TRITON_FUSED_NORM`` says (nestable)."""
    _fused_norm_forced.append(enabled)
    try:
        yield
    finally:
        _fused_norm_forced.pop()


def fuses_norm() -> bool:
    """Whether the kernels also compute the words -> sentence LayerNorm (official layout):
    opt-in (:func:`fused_norm`, or ``TNT_MM_TRITON_FUSED_NORM=1``) until it has been checked
    on a GPU; eager only."""
    if torch.compiler.is_compiling():
        return False
    if _fused_norm_forced:
        return _fused_norm_forced[-1]
    return os.environ.get(FUSED_NORM_ENV) == '1'


def inner_transformer(words: torch.Tensor, params: InnerTransformerParams,
                      training: bool = False, norm=None):
    """The kernels of :func:`tnt_mm.ops.reference.inner_transformer` (no dropout; stochastic
    depth in ``training``) on ``words`` (N, 16, c). Differentiable with respect to the words
    and every weight.

    With ``norm`` (weight, bias and eps of a LayerNorm over 16 c, eager only) they also compute
    the LayerNorm of each patch's output words, and return ``(words, normed)``, ``normed``
    (N, 16 c) in the products' dtype."""
    weights = _weights(params)
    keep_attn = keep_mlp = None
    if training and params.drop_path:
        keep_attn = _stochastic_depth_scales(words, params.drop_path)
        keep_mlp = _stochastic_depth_scales(words, params.drop_path)
    if norm is not None:
        weight, bias, norm_eps = norm
        return _InnerTransformerNormed.apply(
            words.contiguous(), keep_attn, keep_mlp, params.num_heads, params.eps,
            _compute_dtype(words), norm_eps, *weights, weight.contiguous(), bias.contiguous())
    if torch.compiler.is_compiling():
        return _forward_op(words.contiguous(), weights, keep_attn, keep_mlp, params.num_heads,
                           params.eps, _compute_dtype(words))
    return _InnerTransformer.apply(words.contiguous(), keep_attn, keep_mlp, params.num_heads,
                                   params.eps, _compute_dtype(words), *weights)


# ------------------------------------------------------------------ the sentence update
UPDATE_ROWS, UPDATE_WARPS = 4, 4  # sentence rows per program, warps (not yet tuned on a GPU)
MAX_SENTENCE_WIDTH = 1024  # widest sentence row one program holds


def update_unsupported_reasons(sentences: torch.Tensor, projected: torch.Tensor,
                               norm_weight: Optional[torch.Tensor],
                               norm_bias: Optional[torch.Tensor]) -> List[str]:
    """Every reason why :func:`sentence_update` cannot add the LayerNorm of ``projected``
    (B, N, D) to ``sentences`` (B, 1 + N, D); empty if it can."""
    reasons = _platform_reasons(sentences, 'the sentences are')
    if sentences.dtype != torch.float32:
        reasons.append(f'the sentences are {sentences.dtype}; the kernel adds to float32 '
                       f'sentences (float32 models and autocast)')
    if projected.dtype not in DTYPES:
        reasons.append(f'the projected words are {projected.dtype}, the kernels take one of '
                       f'{DTYPES}')
    batch, tokens, width = sentences.shape if sentences.dim() == 3 else (0, 0, 0)
    if projected.shape != (batch, tokens - 1, width) or not tokens:
        reasons.append(f'the projected words have shape {tuple(projected.shape)} for sentences '
                       f'of shape {tuple(sentences.shape)}; the kernel takes (B, T - 1, D) for '
                       f'(B, T, D)')
    if norm_weight is None or norm_bias is None:
        reasons.append('the LayerNorm has no weight or no bias (the kernel applies both)')
    if width > MAX_SENTENCE_WIDTH:
        reasons.append(f'sentence width {width} is wider than the kernel\'s '
                       f'{MAX_SENTENCE_WIDTH}')
    if sentences.numel() >= 2 ** 31:
        reasons.append(f'the sentences have {sentences.numel()} elements; the kernels index '
                       f'with 32 bits')
    capturing = graph_capture()  # no custom op: graphs keep the PyTorch ops
    if capturing:
        reasons.append(capturing)
    return reasons


def _update_meta(width: int) -> dict:
    return dict(D=width, DP=_next_power_of_2(width), R=UPDATE_ROWS)


def update_forward_launch(sentences, projected, norm_weight, norm_bias,
                          eps) -> Tuple[Launch, torch.Tensor]:
    """The update's forward launch and the tensor it writes the new sentences to."""
    batch, tokens, width = sentences.shape
    out = torch.empty_like(sentences)
    rows = batch * tokens
    return Launch('sentence_update_fwd', (_cdiv(rows, UPDATE_ROWS),),
                  [sentences, projected, out, norm_weight, norm_bias, rows, tokens, eps],
                  _update_meta(width), UPDATE_WARPS), out


def update_backward_launch(grad_out, projected, norm_weight,
                           eps) -> Tuple[Launch, torch.Tensor, torch.Tensor]:
    """The update's backward launch, the projected words' gradient, and the LayerNorm's
    gradient slots, (2, programs, D) float32: weight then bias, one row a program."""
    batch, patches, width = projected.shape
    grad_projected = torch.empty_like(projected)
    tiles = _cdiv(batch * patches, UPDATE_ROWS)
    programs = _backward_programs(projected, tiles)
    slots = torch.empty(2, programs, width, dtype=torch.float32, device=projected.device)
    return Launch('sentence_update_bwd', (programs,),
                  [grad_out, projected, grad_projected, norm_weight, slots[0], slots[1],
                   batch * patches, patches, tiles, eps],
                  _update_meta(width), UPDATE_WARPS), grad_projected, slots


class _SentenceUpdate(torch.autograd.Function):
    """:func:`sentence_update`: one kernel forward, one kernel and one sum backward; keeps the
    projected words (the norm is recomputed from them)."""

    @staticmethod
    def forward(ctx, sentences, projected, norm_weight, norm_bias, eps):
        launch, out = update_forward_launch(sentences, projected, norm_weight, norm_bias, eps)
        _launch(launch)
        ctx.save_for_backward(projected, norm_weight)
        ctx.eps = eps
        return out

    @staticmethod
    def backward(ctx, grad_out):
        _refuse_double_backward()
        projected, norm_weight = ctx.saved_tensors
        launch, grad_projected, slots = update_backward_launch(
            grad_out.contiguous(), projected, norm_weight, ctx.eps)
        _launch(launch)
        grad_weight, grad_bias = slots.sum(1).to(norm_weight.dtype)
        return grad_out, grad_projected, grad_weight, grad_bias, None


def sentence_update(sentences: torch.Tensor, projected: torch.Tensor, norm_weight: torch.Tensor,
                    norm_bias: torch.Tensor, eps: float) -> torch.Tensor:
    """``sentences + F.pad(F.layer_norm(projected.float(), ...), (0, 0, 1, 0))``: the official
    layout's words -> sentence update of (B, 1 + N, D) float32 sentences by the (B, N, D)
    projected words (any of :data:`DTYPES`), the LayerNorm in float32, nothing added to the
    class token. Differentiable with respect to all four tensors."""
    return _SentenceUpdate.apply(sentences.contiguous(), projected.contiguous(),
                                 norm_weight.contiguous(), norm_bias.contiguous(), eps)
