#!/usr/bin/env python
"""Kernels, bytes and host syncs of a training and an inference step of tnt_mm's TNT-S (per
inner-transformer backend) and timm's DeiT-S at the GPU benchmark's sizes, counted on the CPU.

    python tools/analysis/step_profile.py                  # all phases, on a faked H200
    python tools/analysis/step_profile.py --phases train --json work_dirs/step_profile.json
    python tools/analysis/step_profile.py --backends triton --top 10 --amp none
    python tools/analysis/step_profile.py --optimizers configs/faster_rcnn_tnt_s_fpn.py

What runs: the steps of ``tools/analysis/benchmark.py``'s ``gpu`` suite (``gpu_main``) on
the rows its ``build`` builds (tnt_mm TNT-S per backend, ``out_type='cls_token'`` at 224 and
``'pyramid'`` at detection size; DeiT-S with the same rescaler on blocks 3/6/9/12
there), with its loss (``loss_of``) and sizes:

- ``train``: 224x224, batch 128: forward under autocast (``--amp``, bf16 by default), loss,
  backward, AdamW ``optimizer.step()`` (``fused`` on CUDA; with fp16 a GradScaler),
  ``zero_grad(set_to_none=True)``. One step runs uncounted first (the optimizer's state, the
  input check read one step later): the counted one is the steady state the benchmark times;
- ``infer``: 224x224, batch 256, under ``torch.inference_mode()`` and autocast;
- ``det``: 800x1344, batch 2, forward + backward with the pyramid, no optimizer.

How: every tensor is a fake tensor (``torch._subclasses.fake_tensor``): shapes, dtypes and
devices propagate, nothing is computed, so batch 128 costs what batch 1 does. The models are
built on the CPU as the benchmark builds them, then their parameters and buffers are replaced
by fake tensors on the fake device (``--device cuda`` by default). A ``TorchDispatchMode``,
below autograd and autocast, sees every ATen op of the counted step:

- kernels: ops that would launch a GPU kernel. Not counted: views and metadata-only ops (every
  op whose schema returns an alias of an input: view, expand, as_strided, t, transpose,
  permute, slice, select, (un)squeeze, detach, alias, split, unbind, ...; and _unsafe_view,
  _reshape_alias, lift_fresh, set_, resize_), allocations (empty, empty_strided, empty_like,
  new_empty), ops whose tensors all live on the host (with ``--device cuda``) and scalar reads
  (``_local_scalar_dense``: syncs). Fills (zeros, zero_, fill_, ones_like) and copies
  (``_to_copy``, ``copy_``, ``clone``, to the host too) are kernels. Composite ops are counted
  as the device runs them: their parts where they reach the mode whole (inference mode turns
  autograd off, and ``linear``, ``layer_norm``, ``to`` arrive undecomposed), and the zero-fill
  and copy of ``slice_backward`` / ``select_backward``, which have no device kernel. A Triton
  launch of the inner transformer (``triton_kernels._launch``, whether called from the eager
  autograd.Function or from the ``tnt_mm::triton_inner_*`` custom ops, which are run through
  their Python implementations) is one kernel; the ATen ops around it (the backward's
  weight-gradient slots: one sum) are counted as any other. Every op is
  one kernel, which it is not always: cuDNN's convolution backward and flash attention's
  backward launch two or three, a ``_foreach_*`` / ``_fused_adamw_`` op one per ~36-110
  tensors, a matmul may split;
- bytes: per kernel, the sizes of the tensors it reads (its tensor inputs, less those it only
  writes: ``zero_``/``fill_``/``copy_``'s destination, ``out=``, the template of ``*_like``)
  and writes (fresh outputs, mutated inputs); a broadcast input counts its stored elements
  once; a Triton launch, each tensor argument once. Per image: divided by the batch (MB =
  1e6 bytes). This is the traffic the kernels' interfaces imply, not DRAM traffic: caches,
  re-reads (the Triton kernels recompute, a matmul re-reads its tiles) are not in it;
- host syncs: ops that need a device value on the host: ``_local_scalar_dense`` (``.item()``,
  ``bool(t)``, ``.tolist()``), ``equal``, ``nonzero``, ``masked_select``, ``unique``,
  boolean-mask indexing, blocking device-to-host copies (a read of a host tensor is not one,
  except with ``--device cpu``, where the CPU AdamW reads its step counts). A fake tensor has
  no value: a scalar read returns a healthy step's (:func:`scalar_answer`). The first frame
  outside torch of each sync is printed;
- host time: the median wall time of ``--repeats`` more steps without the counting: the
  step's Python, autograd and dispatch plus fake-tensor shape propagation, which dominates
  (tens of microseconds an op, several times a CUDA dispatch). It is a CPU-side dispatch cost
  to compare rows by, not a GPU time and not a real host time (``host_time.py`` measures the
  host's own work on real CPU tensors).

The fake GPU (:func:`fake_device`, the one place that patches anything): an H200, compute
capability 9.0 with 132 SMs, for ``torch.cuda``'s queries (``auto`` then picks the Triton
backend on fake CUDA tensors as on the GPU; the backward kernel's programs follow the SM
count), CUDA autocast's and GradScaler's availability check (they switch themselves off
without a GPU), ``torch.cuda.Event``, and the kernel choice of
``F.scaled_dot_product_attention``, which CUDA makes from the device (:func:`sdpa_as_on_gpu`:
flash attention for fp16/bf16, head widths padded to a multiple of 8; else memory-efficient
attention; else the math path). Autocast applies CUDA's rules: bf16 products, float32
LayerNorm (tnt_mm's and CUDA autocast's), each op's dtype in the op table. ``--device cpu``
fakes nothing: the CPU's autocast rules and SDPA kernels, and the Triton backend only under
Triton's interpreter (``TRITON_INTERPRET=1``).

Backward: autograd's C++ engine cannot run fake CUDA tensors without a GPU ("hasPrimaryContext
expects a valid device index", pytorch#92627), so :class:`PythonEngine` runs it, calling each
autograd node as the engine does: in dependency order, summing gradients that meet (an
``add``), casting or reducing a gradient whose dtype or shape differs from what the next node
expects, materialising the missing gradients of custom Functions, accumulating into ``.grad``
as ``AccumulateGrad`` does (the first gradient stolen where its strides match, later ones added
in place), non-reentrant checkpoints recomputed once (a ``GraphExecGroup``). Tensor and module
backward hooks are not run (the benchmark's models have none). On fake CPU tensors it
dispatches exactly the ops of ``Tensor.backward()`` (the tests check it).

Parts: a forward op belongs to the innermost Python frame with a rule (tnt_mm's
``ops.dispatch.inner_transformer``, ``TNTBlock.words_to_sentences`` and its block's lines naming
``update``/``attn``/``mlp``, timm's attention and MLP layers, the embeddings, the pyramid, the
output formatting, ``loss_of``, ``torch.optim``); a backward op to the part of the autograd node
that runs it, from the forward stack anomaly mode (``check_nan=False``) keeps in each node's
metadata. Recomputation in the backward counts as backward. Per block: the block parts (inner
transformer, words-to-sentence, outer attention, MLP) over the number of blocks.

``--optimizers CONFIG...``: instead of the phases, one ``optim_wrapper.step()`` of each config's
model (built as the config says, made fake), with the optimizer its ``optim_wrapper`` builds
and with mmengine's ``DefaultOptimWrapperConstructor`` (one parameter group per parameter):
groups, kernels and host time (:func:`profile_optimizer_step`).

What the numbers do not say: time. Kernel counts and interface bytes are what launch overhead
and memory traffic grow with, but a GPU's time depends on each kernel's efficiency, which only
a GPU run measures (``tools/analysis/benchmark.py gpu``). They are exact for the code
as written and deterministic: a guard, while no GPU is at hand, that a change lowers them.
"""
import argparse
import contextlib
import heapq
import importlib.util
import itertools
import json
import linecache
import os.path as osp
import re
import statistics
import sys
import time
import types
import warnings
from collections import Counter, defaultdict
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

HERE = osp.dirname(osp.abspath(__file__))
THIS_FILE = osp.abspath(__file__).replace('\\', '/')
PHASES = ('train', 'infer', 'det')
DEIT = 'timm DeiT-S'
FAKE_GPU = 'NVIDIA H200 (fake: capability 9.0, 132 SMs)'
PARTS = ('embedding', 'inner transformer', 'words-to-sentence', 'outer attention', 'MLP',
         'output', 'pyramid', 'loss', 'optimizer', 'other')
BLOCK_PARTS = ('inner transformer', 'words-to-sentence', 'outer attention', 'MLP')
STEP_PHASES = ('forward', 'backward', 'optimizer')
AMP = {'bf16': torch.bfloat16, 'fp16': torch.float16, 'none': None}


_BENCHMARK: list = []


def load_benchmark():
    """tools/analysis/benchmark.py (tools/ is not a package): the builds, sizes and loss."""
    if not _BENCHMARK:
        spec = importlib.util.spec_from_file_location('benchmark',
                                                      osp.join(HERE, 'benchmark.py'))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _BENCHMARK.append(module)
    return _BENCHMARK[0]


# ------------------------------------------------------------------ the fake GPU
class FakeCudaEvent:
    """``torch.cuda.Event`` without a GPU: recorded at once, always complete."""

    def __init__(self, *args, **kwargs):
        pass

    def record(self, stream=None):
        pass

    def wait(self, stream=None):
        pass

    def query(self) -> bool:
        return True

    def synchronize(self):
        pass


def _fake_properties(device=None):
    return types.SimpleNamespace(name=FAKE_GPU, major=9, minor=0, multi_processor_count=132,
                                 total_memory=141 * 2 ** 30)


def _is_half(dtype: torch.dtype) -> bool:
    return dtype in (torch.float16, torch.bfloat16)


def sdpa_as_on_gpu(original: Callable) -> Callable:
    """``F.scaled_dot_product_attention`` as CUDA picks its kernel on an sm_90 GPU (torch's
    ``sdp_utils.cpp``, default priority flash > memory-efficient > math): the fused kernels as
    the ATen ops the CUDA path calls, the math path as it is. Autocast's cast of the inputs
    (SDPA is on CUDA autocast's lower-precision list) is made here, before the fused ops, which
    autocast does not know."""
    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
             enable_gqa=False):
        if query.device.type != 'cuda':
            return original(query, key, value, attn_mask, dropout_p, is_causal, scale=scale,
                            enable_gqa=enable_gqa)
        if torch.is_autocast_enabled('cuda'):
            low = torch.get_autocast_dtype('cuda')
            query, key, value = (t.to(low) if t.dtype == torch.float32 else t
                                 for t in (query, key, value))
        head = query.shape[-1]
        four_d = query.dim() == key.dim() == value.dim() == 4
        same_heads = four_d and query.shape[1] == key.shape[1] == value.shape[1]
        same_dtype = query.dtype == key.dtype == value.dtype
        dense = all(t.stride(-1) == 1 for t in (query, key, value))
        if (torch.backends.cuda.flash_sdp_enabled() and same_dtype and _is_half(query.dtype)
                and attn_mask is None and same_heads and dense
                and head == key.shape[-1] == value.shape[-1] and head <= 256):
            pad = -head % 8
            padded = [F.pad(t, (0, pad)) if pad else t for t in (query, key, value)]
            out = torch.ops.aten._scaled_dot_product_flash_attention(
                *padded, dropout_p, is_causal, False,
                scale=scale if scale is not None else head ** -0.5)[0]
            return out[..., :head] if pad else out
        align = 8 if _is_half(query.dtype) else 4
        if (torch.backends.cuda.mem_efficient_sdp_enabled() and same_dtype and same_heads
                and head == key.shape[-1] and head % align == 0 and value.shape[-1] % align == 0):
            lse = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
            return torch.ops.aten._scaled_dot_product_efficient_attention(
                query, key, value, attn_mask, lse, dropout_p, is_causal, scale=scale)[0]
        return original(query, key, value, attn_mask, dropout_p, is_causal, scale=scale,
                        enable_gqa=enable_gqa)
    return sdpa


_COUNTERS: List['StepCounter'] = []  # the counters entered, innermost last


def conv_format_as_cudnn(original: Callable) -> Callable:
    """The output layout of a convolution on fake CUDA tensors as cuDNN picks it: channels last
    when the input or the weight is (4-d); without a GPU the backend chosen is not cuDNN, and
    its layout rule differs."""
    def choose(input_, weight, backend):
        if input_.is_cuda and input_.dim() == 4 and any(
                t.is_contiguous(memory_format=torch.channels_last)
                and not t.is_contiguous() for t in (input_, weight)):
            return torch.channels_last
        return original(input_, weight, backend)
    return choose


def _launch_on_fake_tensors(launch) -> None:
    """``tnt_mm.ops.triton_kernels._launch`` on fake tensors: nothing to run; the active
    counter records the launch as one kernel."""
    if _COUNTERS:
        _COUNTERS[-1].triton_launch(launch)


@contextlib.contextmanager
def fake_device(device: str):
    """Everything this tool patches (restored on exit), in one place:

    - always: ``tnt_mm.ops.triton_kernels._launch``, which would run a Triton kernel on the
      fake tensors' data: it records the launch instead (:func:`_launch_on_fake_tensors`);
    - with ``device='cuda'``: what makes fake CUDA tensors take an H200's code paths without a
      GPU: ``torch.cuda``'s capability, property and name queries (compute capability 9.0,
      132 SMs: ``triton_kernels.built_for`` and ``_backward_programs`` read them, so ``auto``
      picks the Triton backend as on the GPU), ``torch.cuda.is_bf16_supported``, CUDA
      autocast's and GradScaler's availability check (they switch themselves off without a
      GPU), ``torch.cuda.Event`` (:class:`FakeCudaEvent`),
      ``F.scaled_dot_product_attention``'s kernel choice (:func:`sdpa_as_on_gpu`) and the
      convolutions' output layout (:func:`conv_format_as_cudnn`).
    """
    from tnt_mm.ops import triton_kernels
    patches = [(triton_kernels, '_launch', _launch_on_fake_tensors)]
    if device == 'cuda':
        import torch.cuda.amp.common as amp_common
        patches += [
            (torch.cuda, 'get_device_capability', lambda device=None: (9, 0)),
            (torch.cuda, 'get_device_properties', _fake_properties),
            (torch.cuda, 'get_device_name', lambda device=None: FAKE_GPU),
            (torch.cuda, 'is_bf16_supported', lambda *args, **kwargs: True),
            (torch.cuda, 'Event', FakeCudaEvent),
            (amp_common, 'amp_definitely_not_available', lambda: False),
            (F, 'scaled_dot_product_attention',
             sdpa_as_on_gpu(F.scaled_dot_product_attention)),
            (torch._C, '_conv_determine_backend_memory_format',
             conv_format_as_cudnn(torch._C._conv_determine_backend_memory_format)),
        ]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    try:
        for owner, name, value in patches:
            setattr(owner, name, value)
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


def fake_module(module: nn.Module, fake_mode: FakeTensorMode, device: str) -> nn.Module:
    """Replace every parameter and buffer of ``module`` (in place) by a fake tensor of the same
    shape, strides and dtype on ``device``; shared tensors stay shared."""
    made: Dict[int, torch.Tensor] = {}

    def fake(t: torch.Tensor) -> torch.Tensor:
        if id(t) not in made:
            with fake_mode:
                made[id(t)] = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype,
                                                  device=device)
        return made[id(t)]

    for sub in module.modules():
        for name, param in sub._parameters.items():
            if param is not None:
                sub._parameters[name] = nn.Parameter(fake(param), param.requires_grad)
        for name, buf in sub._buffers.items():
            if buf is not None:
                sub._buffers[name] = fake(buf)
    return module


# ------------------------------------------------------------------ parts
_TNT = 'tnt_mm/models/backbones/tnt.py'


def _block_line_part(text: str) -> Optional[str]:
    """A part from the source line of a block's forward (tnt_mm's and timm's blocks)."""
    if 'inner_transformer' in text:
        return 'inner transformer'
    if 'update' in text or 'torch.cat' in text:
        return 'words-to-sentence'
    if 'attn' in text:
        return 'outer attention'
    if 'mlp' in text:
        return 'MLP'
    return None


def frame_part(filename: str, function: str, text: Callable[[], str]) -> Optional[str]:
    """The part one stack frame decides, or None to look further out. ``text`` returns the
    frame's source line."""
    path = filename.replace('\\', '/')
    if '/torch/optim/' in path or path.endswith('torch/amp/grad_scaler.py'):
        return 'optimizer'
    if function == 'loss_of':
        return 'loss'
    if path.endswith('tools/analysis/benchmark.py') and function == 'run':
        return 'output'  # benchmark.build's run(): the class token of the features
    if path.endswith('tnt_mm/ops/dispatch.py') and function == 'inner_transformer':
        # the words' norm, computed after the words where no kernel takes it
        return 'words-to-sentence' if 'return words, patch_norm' in text() else \
            'inner transformer'
    if path.endswith('tnt_mm/models/backbones/pyramid.py'):
        return 'pyramid'
    if path.endswith(_TNT):
        if function == 'words_to_sentences':
            return 'words-to-sentence'
        if function in ('embed', '_check_input', '_check_finite_later'):
            return 'embedding'
        if function == '_format_output':
            return 'output'
        if function == 'forward':
            return _block_line_part(text())
        return None
    if '/timm/' in path:
        if path.endswith('timm/layers/mlp.py'):
            return 'MLP'
        if path.endswith('timm/layers/attention.py'):
            return 'outer attention'
        if path.endswith('timm/layers/patch_embed.py') or function == '_pos_embed':
            return 'embedding'
        if path.endswith('timm/models/vision_transformer.py'):
            if function == 'forward':
                return _block_line_part(text())
            if function in ('forward_features', 'forward_intermediates'):
                line = text()
                if re.search(r'patch_embed|_pos_embed|patch_drop|norm_pre', line):
                    return 'embedding'
                return 'output'
    return None


_FRAME_PARTS: Dict[tuple, Optional[str]] = {}


def live_part(frame) -> str:
    """The part of the op being dispatched now, from the live Python stack."""
    while frame is not None:
        code = frame.f_code
        key = (code, frame.f_lineno)
        if key not in _FRAME_PARTS:
            filename, lineno = code.co_filename, frame.f_lineno
            _FRAME_PARTS[key] = frame_part(filename, code.co_name,
                                           lambda: linecache.getline(filename, lineno))
        part = _FRAME_PARTS[key]
        if part is not None:
            return part
        frame = frame.f_back
    return 'other'


_TRACE_LINE = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>[^\n]+)\n'
                         r'(?P<text>[^\n]*)')


def traceback_part(trace: Sequence[str]) -> str:
    """The part of an autograd node, from the forward stack anomaly mode stored with it
    (``traceback.format_stack()`` strings, outermost first)."""
    for entry in reversed(trace):
        match = _TRACE_LINE.search(entry)
        if match is None:
            continue
        part = frame_part(match['file'], match['func'].strip(), lambda: match['text'])
        if part is not None:
            return part
    return 'other'


# ------------------------------------------------------------------ the backward engine
class PythonEngine:
    """Runs the backward pass by calling the autograd nodes from Python (see the module
    docstring: the C++ engine cannot run fake CUDA tensors without a GPU). ``node`` is the node
    running now, for the attribution of its ops."""

    def __init__(self):
        self.node = None

    def backward(self, root: torch.Tensor, grad: Optional[torch.Tensor] = None) -> None:
        if root.grad_fn is None:
            raise RuntimeError('the tensor has no grad_fn: nothing to differentiate')
        if grad is None:  # as torch.autograd.backward makes it
            grad = torch.ones_like(root, memory_format=torch.preserve_format)
        start = root.grad_fn
        dependencies: Counter = Counter()
        seen, stack = {start}, [start]
        while stack:
            node = stack.pop()
            for child, _ in node.next_functions:
                if child is None:
                    continue
                dependencies[child] += 1
                if child not in seen:
                    seen.add(child)
                    stack.append(child)
        buffers = {start: self._empty_buffer(start)}
        buffers[start][0] = grad
        order = itertools.count()
        ready = [(-self._sequence_nr(start), next(order), start)]
        # one backward pass for non-reentrant checkpointing, which recomputes a region once per
        # graph task (the C++ engine's id) or group; outside the engine, once per unpacked tensor
        group = torch.utils.checkpoint.GraphExecGroup()
        try:
            with torch.no_grad(), group:
                while ready:
                    node = heapq.heappop(ready)[2]
                    self.node = node
                    outputs = self._run(node, buffers.pop(node))
                    for (child, slot), out in zip(node.next_functions, outputs):
                        if child is None:
                            continue
                        buffer = buffers.setdefault(child, self._empty_buffer(child))
                        if out is not None:
                            out = self._validate(out, child, slot)
                            buffer[slot] = out if buffer[slot] is None else buffer[slot] + out
                        dependencies[child] -= 1
                        if dependencies[child] == 0:
                            heapq.heappush(ready, (-self._sequence_nr(child), next(order),
                                                   child))
        finally:
            self.node = None

    @staticmethod
    def _sequence_nr(node) -> int:
        if type(node).__name__ == 'AccumulateGrad':
            return 2 ** 63  # UINT64_MAX in the engine: run as soon as ready
        return node._sequence_nr()

    @staticmethod
    def _empty_buffer(node) -> List[Optional[torch.Tensor]]:
        if type(node).__name__ == 'AccumulateGrad':
            return [None]
        return [None] * len(node._input_metadata)

    @staticmethod
    def _validate(grad: torch.Tensor, node, slot: int) -> torch.Tensor:
        """The engine's ``validate_outputs``: reduce a broadcast gradient, cast its dtype."""
        if type(node).__name__ == 'AccumulateGrad':
            shape, dtype = node.variable.shape, node.variable.dtype
        else:
            meta = node._input_metadata[slot]
            shape, dtype = meta.shape, meta.dtype
        if tuple(grad.shape) != tuple(shape):
            grad = grad.sum_to_size(tuple(shape))
        if grad.dtype != dtype:
            grad = grad.to(dtype)
        return grad

    @staticmethod
    def _run(node, inputs: List[Optional[torch.Tensor]]) -> List[Optional[torch.Tensor]]:
        if type(node).__name__ == 'AccumulateGrad':
            PythonEngine._accumulate(node.variable, inputs[0])
            return []
        if isinstance(node, torch.autograd.function.BackwardCFunction):
            # a custom Function (PyNode): missing gradients materialised as zeros, one result
            # per forward input, mapped onto the edges of the inputs that need a gradient
            inputs = [g if g is not None else torch.zeros(meta.shape, dtype=meta.dtype,
                                                          device=meta.device)
                      for g, meta in zip(inputs, node._input_metadata)]
            results = node.apply(*inputs)
            results = results if isinstance(results, tuple) else (results,)
            wanted = iter(g for g, needed in zip(results, node.needs_input_grad) if needed)
            return [next(wanted) if child is not None else None
                    for child, _ in node.next_functions]
        results = node(*inputs)
        return list(results) if isinstance(results, (tuple, list)) else [results]

    @staticmethod
    def _accumulate(variable: torch.Tensor, grad: Optional[torch.Tensor]) -> None:
        """``AccumulateGrad``: the first gradient is stolen where its strides are the
        variable's (else copied to them), later ones are added in place."""
        if grad is None:
            return
        if variable.grad is None:
            if grad.stride() != variable.stride():
                grad = torch.empty_strided(variable.shape, variable.stride(), dtype=grad.dtype,
                                           device=grad.device).copy_(grad)
            variable.grad = grad
        else:
            variable.grad.add_(grad)


# ------------------------------------------------------------------ the counting
# Ops that move no data on the device, beyond the schema's views (OpOverload.is_view).
NOT_KERNELS = frozenset(
    'aten::' + name for name in (
        '_unsafe_view', '_reshape_alias', 'lift_fresh', 'set_', 'resize_', 'resize_as_',
        'empty', 'empty_strided', 'empty_like', 'new_empty', 'new_empty_strided',
        'empty_permuted', '_pin_memory', 'detach_', 'squeeze_', 'unsqueeze_', 't_',
        'transpose_', 'as_strided_', 'is_same_size', '_has_compatible_shallow_copy_type',
        'sym_size', 'sym_stride', 'sym_numel', 'sym_storage_offset', 'is_pinned',
        'record_stream', '_assert_tensor_metadata', '_local_scalar_dense'))
# Ops that need a value on the host; the first three are answered here (fake tensors have no
# value), the others run as fake ops (and fail if the output's size depends on the data).
SCALAR_READS = frozenset(('aten::_local_scalar_dense', 'aten::is_nonzero', 'aten::equal'))
DATA_DEPENDENT = frozenset('aten::' + name for name in (
    'nonzero', 'masked_select', 'unique', '_unique', '_unique2', 'unique_dim',
    'unique_consecutive', 'bincount'))
# In-place ops that only write their first argument.
WRITE_ONLY_SELF = frozenset('aten::' + name for name in (
    'zero_', 'fill_', 'copy_', 'normal_', 'uniform_', 'random_', 'exponential_', 'geometric_',
    'cauchy_', 'log_normal_', 'bernoulli_'))
CUSTOM_OPS = ('tnt_mm::triton_inner_forward', 'tnt_mm::triton_inner_backward')
# Backward ops with no device kernel of their own: their composite kernels run here, and the
# kernels they call are counted (a zero-fill of the input's size and a copy into a slice of it).
COMPOSITE_BACKWARDS = {
    'aten::slice_backward': torch._C.DispatchKey.CompositeExplicitAutograd,
    'aten::select_backward': torch._C.DispatchKey.CompositeExplicitAutogradNonFunctional,
    'aten::diagonal_backward': torch._C.DispatchKey.CompositeExplicitAutogradNonFunctional,
}


def _tensors(value) -> List[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _tensors(item)]
    return []


def footprint(t: torch.Tensor) -> int:
    """Bytes a tensor's elements occupy, broadcast (stride 0) dimensions counted once."""
    count = 1
    for size, stride in zip(t.shape, t.stride()):
        if stride != 0:
            count *= size
    return count * t.element_size() if t.numel() else 0


class _Roles:
    """Which arguments of an op are read, which written (from its schema), per op overload."""
    cache: Dict = {}

    def __init__(self, func):
        schema = func._schema
        name = schema.name
        self.write_only_inputs = set()
        self.mutated = set()
        for index, arg in enumerate(schema.arguments):
            alias = arg.alias_info
            if alias is not None and alias.is_write:
                self.mutated.add(arg.name)
                if arg.kwarg_only or (index == 0 and name in WRITE_ONLY_SELF):
                    self.write_only_inputs.add(arg.name)  # out= arguments, fills
        # the template tensor of factories
        base = name.split('::')[-1]
        self.template_only = base.endswith('_like') or base.startswith('new_')
        self.fresh_returns = [r.alias_info is None for r in schema.returns]
        self.names = [arg.name for arg in schema.arguments]

    @classmethod
    def of(cls, func) -> '_Roles':
        if func not in cls.cache:
            cls.cache[func] = cls(func)
        return cls.cache[func]


def op_bytes(func, args, kwargs, out) -> int:
    roles = _Roles.of(func)
    named = dict(zip(roles.names, args))
    named.update(kwargs)
    read = written = 0
    for name, value in named.items():
        tensors = _tensors(value)
        if not tensors:
            continue
        size = sum(footprint(t) for t in tensors)
        if not roles.template_only and name not in roles.write_only_inputs:
            read += size
        if name in roles.mutated:
            written += size
    outs = out if isinstance(out, (tuple, list)) and len(roles.fresh_returns) > 1 else [out]
    for fresh, value in zip(roles.fresh_returns, outs):
        if fresh:
            written += sum(footprint(t) for t in _tensors(value))
    return read + written


def _caller(frame) -> str:
    """``file:line  code`` of the innermost frame outside torch and this tool (else outside
    this tool)."""
    def own(filename: str) -> bool:
        return filename == THIS_FILE or filename.endswith('/contextlib.py')

    frames = []
    while frame is not None:
        filename = frame.f_code.co_filename.replace('\\', '/')
        if not own(filename):
            frames.append((filename, frame))
        frame = frame.f_back
    outside = [f for f in frames if '/torch/' not in f[0]] or [
        f for f in frames if not re.search(r'/torch/(_|utils/)', f[0])] or frames
    if not outside:
        return '?'
    filename, frame = outside[0]
    text = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
    root = osp.dirname(osp.dirname(HERE)).replace('\\', '/') + '/'
    if '/site-packages/' in filename:
        filename = filename.split('/site-packages/')[-1]
    elif filename.startswith(root):
        filename = filename[len(root):]
    return f'{filename}:{frame.f_lineno}  {text}'


class StepCounter(TorchDispatchMode):
    """Counts what one step dispatches below autograd (see the module docstring), per phase
    (``self.phase``, set by the step through :func:`set_phase`) and part.

    Args:
        device (str): the fake device the step runs on; with 'cuda', ops whose tensors all
            live on the host are host work, not kernels.
        engine (PythonEngine, optional): whose running node attributes backward ops.
        attribute (bool): attribute ops to parts (walks the stack for every op); else every op
            is 'other'.
        keep_ops (bool): also keep the kernels' op names, in order (``self.ops``).
    """

    def __init__(self, device: str = 'cuda', engine: Optional[PythonEngine] = None,
                 attribute: bool = True, keep_ops: bool = False):
        super().__init__()
        self.device = device
        self.engine = engine
        self.attribute = attribute
        self.keep_ops = keep_ops
        self.phase = 'forward'
        self.kernels: Counter = Counter()  # (phase, part) -> kernels
        self.bytes: Counter = Counter()  # (phase, part) -> bytes
        self.op_counts: Counter = Counter()  # (phase, part, 'aten::op[dtype]') -> kernels
        self.syncs: List[dict] = []
        self.host_ops = 0
        self.ops: List[str] = []
        self._node_parts: Dict = {}
        self._implicit_ops: Dict = {}
        self._wrapper_part: Optional[str] = None  # the part of the custom op running now

    def __enter__(self):
        _COUNTERS.append(self)
        return super().__enter__()

    def __exit__(self, *exc):
        _COUNTERS.pop()
        return super().__exit__(*exc)

    # -- attribution
    def part(self) -> str:
        if self._wrapper_part is not None:
            return self._wrapper_part
        if not self.attribute:
            return 'other'
        if self.phase == 'optimizer':
            return 'optimizer'
        if self.phase == 'backward':
            node = self.engine.node if self.engine is not None else None
            if node is None:
                return 'loss'  # the seed gradient
            if node not in self._node_parts:
                trace = node.metadata.get('traceback_')  # AccumulateGrad has none
                self._node_parts[node] = traceback_part(trace) if trace else 'other'
            return self._node_parts[node]
        return live_part(sys._getframe(1))

    # -- totals
    def total(self, what: str = 'kernels', phases: Sequence[str] = STEP_PHASES,
              parts: Optional[Sequence[str]] = None) -> int:
        table = self.kernels if what == 'kernels' else self.bytes
        return sum(v for (phase, part), v in table.items()
                   if phase in phases and (parts is None or part in parts))

    # -- recording
    def record(self, name: str, tensors: List[torch.Tensor], nbytes: int) -> None:
        """One kernel ``name`` touching ``tensors`` (for the device and dtype), ``nbytes``."""
        if self.device != 'cpu' and tensors and all(t.device.type == 'cpu' for t in tensors):
            self.host_ops += 1
            return
        dtype = next((t.dtype for t in tensors if t.is_floating_point()),
                     tensors[0].dtype if tensors else None)
        key = (self.phase, self.part())
        self.kernels[key] += 1
        self.bytes[key] += nbytes
        label = f'{name}[{str(dtype).replace("torch.", "")}]' if dtype is not None else name
        self.op_counts[key + (label,)] += 1
        if self.keep_ops:
            self.ops.append(name.split('::')[-1])

    def triton_launch(self, launch) -> None:
        """A Triton launch (``triton_kernels.Launch``): one kernel; its bytes are its tensor
        arguments', each counted once (the inputs read, the outputs and slots written), a view
        as the whole tensor it views (the weight-gradient pointers address all the rows of
        the slot buffer)."""
        bases = [t if t._base is None else t._base for t in _tensors(launch.args)]
        distinct = list({id(t): t for t in bases}.values())
        self.record(f'triton::{launch.kernel}', distinct, sum(map(footprint, distinct)))

    def _sync(self, name: str, detail: str = '') -> None:
        self.syncs.append(dict(phase=self.phase, op=name + detail,
                               where=_caller(sys._getframe(1))))

    def __torch_dispatch__(self, func, types_, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name
        if name in SCALAR_READS:
            if self.device == 'cpu' or args[0].device.type != 'cpu':  # else a host value
                self._sync(name)
            return scalar_answer(name, args)
        data_dependent = name in DATA_DEPENDENT or (name == 'aten::index' and any(
            t.dtype == torch.bool for t in _tensors(args[1:])))
        if data_dependent:
            self._sync(name)
        if name in CUSTOM_OPS:
            return self._run_custom_op(name, args, kwargs)
        if name in COMPOSITE_BACKWARDS:
            with self:
                return func._op_dk(COMPOSITE_BACKWARDS[name], *args, **kwargs)
        if func.namespace == 'aten' and self._implicit(func):
            # reached here undecomposed where autograd is off (inference mode): decomposed as
            # the device's dispatch would, its parts counted
            with self:
                return func.decompose(*args, **kwargs)
        try:
            out = func(*args, **kwargs)
        except torch._subclasses.fake_tensor.DynamicOutputShapeException as error:
            if not data_dependent:
                raise
            raise RuntimeError(f'{name}: the size of its output depends on the data, which fake '
                               f'tensors do not have; this step cannot be profiled here '
                               f'(at {self.syncs[-1]["where"]})') from error
        if func.namespace in ('prim', 'profiler') or func.is_view or name in NOT_KERNELS:
            return out
        if name in ('aten::copy_', 'aten::_to_copy'):
            self._check_copy(name, args, kwargs, out)
        self.record(name, _tensors(list(args) + list(kwargs.values())) + _tensors(out),
                    op_bytes(func, args, kwargs, out))
        return out

    def _implicit(self, func) -> bool:
        """Whether ``func`` is a composite of other ops on this device
        (CompositeImplicitAutograd, no kernel of the device's own)."""
        if func not in self._implicit_ops:
            has = torch._C._dispatch_has_kernel_for_dispatch_key
            backend = 'CUDA' if self.device == 'cuda' else 'CPU'
            self._implicit_ops[func] = (has(func.name(), 'CompositeImplicitAutograd')
                                        and not has(func.name(), backend))
        return self._implicit_ops[func]

    def _check_copy(self, name, args, kwargs, out) -> None:
        """A blocking copy from the device to the host is a sync."""
        if name == 'aten::copy_':
            dst, src = args[0], args[1]
            blocking = not (args[2] if len(args) > 2 else kwargs.get('non_blocking', False))
        else:
            dst, src = out, args[0]
            blocking = not kwargs.get('non_blocking', False)
        if blocking and dst.device.type == 'cpu' and src.device.type != 'cpu':
            self._sync(name, ' to the host')

    def _run_custom_op(self, name: str, args, kwargs):
        """A Triton custom op (torch.compile's way in; eager tnt_mm calls the same launches
        through an autograd.Function): its real Python implementation on the fake tensors, so
        that its ATen ops and its launch (patched by :func:`fake_device`) are counted as the
        eager path's, under the op's part."""
        from tnt_mm.ops import triton_kernels
        wrapper = {'tnt_mm::triton_inner_forward': triton_kernels._forward_op,
                   'tnt_mm::triton_inner_backward': triton_kernels._backward_op}[name]
        self._wrapper_part = self.part()
        try:
            with self:
                return wrapper._init_fn(*args, **kwargs)
        finally:
            self._wrapper_part = None


def scalar_answer(name: str, args):
    """What a scalar read of a fake tensor returns, a healthy step's value: True for booleans
    (a finite input), 0 for GradScaler's count of infinite gradients, else 1 (an optimizer's
    step count)."""
    if name != 'aten::_local_scalar_dense' or args[0].dtype == torch.bool:
        return True
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_filename.replace('\\', '/').endswith('torch/amp/grad_scaler.py'):
            return 0.0
        frame = frame.f_back
    return 1.0 if args[0].is_floating_point() else 1


class ScalarReads(TorchDispatchMode):
    """Answers the scalar reads of fake tensors (:func:`scalar_answer`), which fail
    otherwise, in the steps that are not counted."""

    def __torch_dispatch__(self, func, types_, args=(), kwargs=None):
        name = func._schema.name
        if name in SCALAR_READS:
            return scalar_answer(name, args)
        return func(*args, **(kwargs or {}))


def set_phase(name: str) -> None:
    """Tell the active counter (if any) which phase of the step runs now."""
    if _COUNTERS:
        _COUNTERS[-1].phase = name


# ------------------------------------------------------------------ the steps
def make_step(phase: str, forward: Callable, x: torch.Tensor, device: str,
              amp_dtype: Optional[torch.dtype], engine: PythonEngine) -> Callable[[], None]:
    """One step of ``phase`` as benchmark.py's ``gpu_main`` runs it (``train``: its
    ``train_job`` with an AdamW; ``det``: without one; ``infer``: its ``infer_job``), the
    backward pass through ``engine``."""
    bench = load_benchmark()
    module = forward.module

    def autocast():
        return torch.autocast(device, dtype=amp_dtype, enabled=amp_dtype is not None)

    if phase == 'infer':
        module.eval()

        def infer():
            set_phase('forward')
            with torch.inference_mode(), autocast():
                forward(x)
        return infer

    module.train()
    optimizer = scaler = None
    if phase == 'train':
        optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4, fused=device == 'cuda')
    if amp_dtype == torch.float16:
        scaler = torch.amp.GradScaler(device)

    def train():
        set_phase('forward')
        with autocast():
            loss = bench.loss_of(forward(x))
        set_phase('backward')
        engine.backward(scaler.scale(loss) if scaler else loss)
        if optimizer is not None:
            set_phase('optimizer')
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
        module.zero_grad(set_to_none=True)
    return train


def profile_step(step: Callable[[], None], counter: StepCounter, fake_mode: FakeTensorMode,
                 repeats: int, warmup: int = 1) -> float:
    """Run ``step`` ``warmup`` times uncounted, once counted (``counter``, with anomaly mode's
    forward stacks for the attribution), then ``repeats`` times timed; the median time."""
    with fake_mode:
        with ScalarReads():
            for _ in range(warmup):
                step()
        with warnings.catch_warnings():
            warnings.filterwarnings('ignore', message='Anomaly Detection has been enabled')
            anomaly = torch.autograd.detect_anomaly(check_nan=False) if counter.attribute \
                else contextlib.nullcontext()
            with anomaly, counter:
                step()
        times = []
        with ScalarReads():
            for _ in range(repeats):
                start = time.perf_counter()
                step()
                times.append(time.perf_counter() - start)
    return statistics.median(times) if times else float('nan')


def summarise(counter: StepCounter, batch: int, depth: int, host_s: float) -> dict:
    per_phase = {phase: counter.total('kernels', (phase,)) for phase in STEP_PHASES}
    parts = {}
    for part in PARTS:
        kernels = {phase: counter.kernels[(phase, part)] for phase in STEP_PHASES}
        mb = sum(counter.bytes[(phase, part)] for phase in STEP_PHASES) / batch / 1e6
        if any(kernels.values()) or mb:
            parts[part] = dict(kernels=sum(kernels.values()), mb_per_image=mb, **kernels)
    ops: Dict[str, Counter] = defaultdict(Counter)
    part_ops: Dict[str, Counter] = defaultdict(Counter)
    for (phase, part, label), count in counter.op_counts.items():
        ops[phase][label] += count
        part_ops[part][f'{phase[:3]} {label}'] += count
    for part, p in parts.items():
        p['ops'] = dict(part_ops[part].most_common())
    return dict(
        kernels=sum(per_phase.values()), **{f'kernels_{p}': n for p, n in per_phase.items()},
        block_forward=counter.total('kernels', ('forward',), BLOCK_PARTS) / depth,
        block_backward=counter.total('kernels', ('backward',), BLOCK_PARTS) / depth,
        mb_per_image=counter.total('bytes') / batch / 1e6,
        syncs=len(counter.syncs), sync_sites=[
            dict(zip(('phase', 'op', 'where'), site), count=n) for site, n in
            Counter((s['phase'], s['op'], s['where']) for s in counter.syncs).items()],
        host_ops=counter.host_ops,
        host_ms=host_s * 1e3, batch=batch, blocks=depth, parts=parts,
        ops={phase: dict(o.most_common()) for phase, o in ops.items()})


def build_fake(name: str, img_size, device: str) -> Callable:
    """One benchmark row as ``benchmark.build`` builds it (on the CPU), its parameters and
    buffers then made fake on ``device``; ``forward.fake_mode`` is the mode to run it in."""
    output = 'cls' if tuple(img_size) == (224, 224) else 'pyramid'
    forward = load_benchmark().build(name, img_size, 'cpu', output)
    forward.fake_mode = FakeTensorMode()
    fake_module(forward.module, forward.fake_mode, device)
    return forward


def profile_phase(forward: Callable, phase: str, img_size, batch: int, device: str = 'cuda',
                  amp: str = 'bf16', repeats: int = 3, attribute: bool = True) -> dict:
    """Profile one ``phase`` step of a row from :func:`build_fake` (inside
    :func:`fake_device`): the figures of :func:`summarise`."""
    with forward.fake_mode:
        x = torch.empty(batch, 3, *img_size, device=device)
    engine = PythonEngine()
    step = make_step(phase, forward, x, device, AMP[amp], engine)
    counter = StepCounter(device, engine, attribute=attribute)
    host_s = profile_step(step, counter, forward.fake_mode, repeats,
                          warmup=1 if phase == 'train' else 0)
    return summarise(counter, batch, len(forward.module.blocks), host_s)


def profile_row(name: str, phase: str, device: str = 'cuda', amp: str = 'bf16',
                repeats: int = 3, sizes: Optional[dict] = None, attribute: bool = True) -> dict:
    """Build one row and profile one ``phase`` step at ``sizes`` (default: the benchmark's)."""
    img_size, batch = (sizes or default_sizes(load_benchmark()))[phase]
    with fake_device(device):
        forward = build_fake(name, img_size, device)
        return profile_phase(forward, phase, img_size, batch, device, amp, repeats, attribute)


def default_sizes(bench) -> dict:
    return {'train': ((224, 224), bench.TRAIN_BATCH), 'infer': ((224, 224), bench.INFER_BATCH),
            'det': (tuple(bench.DET_SIZE), bench.DET_BATCH)}


def row_names(backends: Sequence[str]) -> List[str]:
    bench = load_benchmark()
    # 'triton-fused': the kernels' words -> sentence norm and update, low-precision words (opt-in)
    return [f'{bench.OURS} [{b.replace("-fused", ", fused")}]' for b in backends] + [DEIT]


def profile_optimizer_step(config: str, constructor: Optional[str] = None,
                           device: str = 'cuda', repeats: int = 3) -> dict:
    """One ``optim_wrapper.step()`` of ``config``'s model (made fake on ``device``, every
    gradient set) with its ``optim_wrapper``, built by ``constructor`` if given (e.g.
    ``'DefaultOptimWrapperConstructor'``): parameter tensors, groups, kernels, host ms. On
    CUDA the optimizer (unless the config says ``fused``) and the gradient clipping run
    ``foreach``, as torch picks on a GPU."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import MODELS, DefaultScope

    from tnt_mm.utils.config import load_config
    cfg = load_config(config)
    wrapper_cfg = cfg.optim_wrapper.copy()
    if constructor:
        wrapper_cfg['constructor'] = constructor
    if device == 'cuda':  # torch's default for CUDA tensors; it takes fakes for another kind
        if not wrapper_cfg.optimizer.get('fused'):
            wrapper_cfg.optimizer.setdefault('foreach', True)
        if wrapper_cfg.get('clip_grad'):
            wrapper_cfg.clip_grad.setdefault('foreach', True)
    with fake_device(device), DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
        fake_mode = FakeTensorMode()
        fake_module(model, fake_mode, device)
        with fake_mode:
            wrapper = build_optim_wrapper(model, wrapper_cfg)
            params = [p for p in model.parameters() if p.requires_grad]
            for param in params:
                param.grad = torch.zeros_like(param)

        def step():
            set_phase('optimizer')
            wrapper.step()

        counter = StepCounter(device, attribute=False)
        host_s = profile_step(step, counter, fake_mode, repeats, warmup=1)
    return dict(tensors=len(params), groups=len(wrapper.optimizer.param_groups),
                kernels=counter.total('kernels', ('optimizer',)), host_ms=host_s * 1e3,
                constructor=wrapper_cfg.get('constructor', 'DefaultOptimWrapperConstructor'))


def print_optimizers(results: Dict[str, List[dict]]) -> None:
    print('\n### one optimizer step (optim_wrapper.step()), by constructor\n')
    print('| config | constructor | tensors | groups | kernels | host ms* |')
    print('|---|---|---:|---:|---:|---:|')
    for config, rows in results.items():
        for r in rows:
            print(f"| {config} | {r['constructor']} | {r['tensors']} | {r['groups']} | "
                  f"{r['kernels']} | {r['host_ms']:.0f} |")


# ------------------------------------------------------------------ the report
def _ratio(a: float, b: float) -> str:
    return f'{a / b:.2f}x' if b else '-'


def print_phase(title: str, results: Dict[str, dict], phase: str) -> None:
    rows = [name for name in results if phase in results[name]]
    print(f'\n### {title}\n')
    columns = ['kernels', 'fwd', 'bwd', 'opt', 'block fwd', 'block bwd', 'MB/img', 'syncs',
               'host ms*']
    print('| model | ' + ' | '.join(columns) + ' |')
    print('|---|' + '---:|' * len(columns))
    for name in rows:
        r = results[name][phase]
        cells = [r['kernels'], r['kernels_forward'], r['kernels_backward'],
                 r['kernels_optimizer'], f"{r['block_forward']:.1f}",
                 f"{r['block_backward']:.1f}", f"{r['mb_per_image']:.1f}", r['syncs'],
                 f"{r['host_ms']:.0f}"]
        print(f'| {name} | ' + ' | '.join(str(c) for c in cells) + ' |')
    if DEIT in rows:
        base = results[DEIT][phase]
        for name in rows:
            if name == DEIT:
                continue
            r = results[name][phase]
            print(f'\n{name} / {DEIT}: kernels {_ratio(r["kernels"], base["kernels"])}, '
                  f'block fwd {_ratio(r["block_forward"], base["block_forward"])}, '
                  f'block bwd {_ratio(r["block_backward"], base["block_backward"])}, '
                  f'MB/img {_ratio(r["mb_per_image"], base["mb_per_image"])}, '
                  f'host {_ratio(r["host_ms"], base["host_ms"])}')
    for name in rows:
        for site in results[name][phase]['sync_sites']:
            print(f'\nsync{"s" if site["count"] > 1 else ""} ({name}, {site["phase"]}): '
                  f'{site["count"]} x {site["op"]} at {site["where"]}')


def print_parts(title: str, results: Dict[str, dict], phase: str) -> None:
    rows = [name for name in results if phase in results[name]]
    print(f'\n{title}, per part: kernels (forward/backward/optimizer) and MB per image\n')
    print('| part | ' + ' | '.join(rows) + ' |')
    print('|---|' + '---:|' * len(rows))
    for part in PARTS:
        cells = []
        for name in rows:
            p = results[name][phase]['parts'].get(part)
            cells.append('' if p is None else
                         f"{p['kernels']} ({p['forward']}/{p['backward']}/{p['optimizer']}), "
                         f"{p['mb_per_image']:.1f} MB")
        if any(cells):
            print(f'| {part} | ' + ' | '.join(cells) + ' |')


def print_top(results: Dict[str, dict], phase: str, top: int) -> None:
    for name, by_phase in results.items():
        if phase not in by_phase:
            continue
        for step_phase, ops in by_phase[phase]['ops'].items():
            listed = ', '.join(f'{op} {n}' for op, n in list(ops.items())[:top])
            print(f'\n{name}, {step_phase}: {listed}')


def main(argv: Optional[Sequence[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--phases', nargs='+', choices=PHASES, default=list(PHASES))
    parser.add_argument('--backends', nargs='+',
                        choices=('reference', 'triton', 'triton-fused', 'auto'),
                        help='tnt_mm inner-transformer backends, one row each; triton-fused: '
                        'with the opt-in fused words -> sentence norm and update and '
                        'low_precision_words (default: reference triton with --device cuda, '
                        'reference with '
                        '--device cpu)')
    parser.add_argument('--amp', choices=sorted(AMP), default='bf16',
                        help='autocast dtype, as the GPU benchmark\'s --amp (fp16 with a '
                        'GradScaler). Defaults to bf16')
    parser.add_argument('--device', choices=('cuda', 'cpu'), default='cuda',
                        help='the fake device. Defaults to cuda (an H200, faked)')
    parser.add_argument('--repeats', type=int, default=3,
                        help='timed steps for the host time (median). Defaults to 3')
    parser.add_argument('--train-batch', type=int)
    parser.add_argument('--infer-batch', type=int)
    parser.add_argument('--det-size', type=int, nargs=2, metavar=('H', 'W'))
    parser.add_argument('--det-batch', type=int)
    parser.add_argument('--top', type=int, default=0,
                        help='also list the N most frequent kernel ops per row and phase')
    parser.add_argument('--optimizers', nargs='+', metavar='CONFIG',
                        help='instead of the phases: one optimizer step of each config\'s '
                        'model, with its optim_wrapper and with mmengine\'s default '
                        'constructor (one group per parameter)')
    parser.add_argument('--json', help='write every number here')
    args = parser.parse_args(argv)
    if args.optimizers:
        device_name = FAKE_GPU if args.device == 'cuda' else 'cpu (fake)'
        print(f'fake device: {device_name}, torch {torch.__version__}')
        results = {config: [profile_optimizer_step(config, 'DefaultOptimWrapperConstructor',
                                                   args.device, args.repeats),
                            profile_optimizer_step(config, None, args.device, args.repeats)]
                   for config in args.optimizers}
        print_optimizers(results)
        print('\n*host ms: CPU time of the step on fake tensors (fake-tensor overhead '
              'included).')
        if args.json:
            with open(args.json, 'w') as f:
                json.dump(results, f, indent=1)
        return results
    bench = load_benchmark()
    sizes = default_sizes(bench)
    if args.train_batch:
        sizes['train'] = (sizes['train'][0], args.train_batch)
    if args.infer_batch:
        sizes['infer'] = (sizes['infer'][0], args.infer_batch)
    if args.det_size or args.det_batch:
        sizes['det'] = (tuple(args.det_size or sizes['det'][0]),
                        args.det_batch or sizes['det'][1])
    backends = args.backends or (['reference', 'triton'] if args.device == 'cuda'
                                 else ['reference'])
    rows = row_names(backends)
    device_name = FAKE_GPU if args.device == 'cuda' else 'cpu (fake)'
    print(f'fake device: {device_name}, torch {torch.__version__}, amp: {args.amp}')
    results: Dict[str, Dict[str, dict]] = {name: {} for name in rows}
    titles = {
        'train': f'training step at {sizes["train"][0][0]}x{sizes["train"][0][1]}, '
                 f'batch {sizes["train"][1]} (forward, backward, AdamW)',
        'infer': f'inference at {sizes["infer"][0][0]}x{sizes["infer"][0][1]}, '
                 f'batch {sizes["infer"][1]}',
        'det': f'forward+backward at {sizes["det"][0][0]}x{sizes["det"][0][1]}, '
               f'batch {sizes["det"][1]}, with the pyramid'}
    with fake_device(args.device):
        for name in rows:
            built = {}  # one model for train and infer, as the benchmark
            for phase in args.phases:
                img_size, batch = sizes[phase]
                start = time.perf_counter()
                if tuple(img_size) not in built:
                    built = {tuple(img_size): build_fake(name, img_size, args.device)}
                results[name][phase] = profile_phase(
                    built[tuple(img_size)], phase, img_size, batch, args.device, args.amp,
                    args.repeats)
                print(f'  {name}, {phase}: {time.perf_counter() - start:.1f}s',
                      file=sys.stderr, flush=True)
    for phase in args.phases:
        print_phase(titles[phase], results, phase)
        print_parts(titles[phase], results, phase)
        if args.top:
            print_top(results, phase, args.top)
    print('\n*host ms: CPU time of the step\'s Python, autograd and dispatch on fake tensors '
          '(fake-tensor overhead included): the dispatch cost relative to other rows, not a '
          'GPU or real host time. MB = 1e6 bytes of op inputs and outputs, per image.')
    record = dict(device=device_name, torch=torch.__version__, amp=args.amp,
                  sizes={p: dict(size=list(s), batch=b) for p, (s, b) in sizes.items()},
                  results=results)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(record, f, indent=1)
    return record


if __name__ == '__main__':
    main()
