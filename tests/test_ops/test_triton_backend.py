"""The Triton backend without a GPU.

- Its kernels run in Triton's interpreter (``TRITON_INTERPRET=1``) on CPU tensors and give the
  reference's outputs and gradients: float32 to 1e-4, float16 and bfloat16 (autocast and
  half-precision weights) as accurately as the reference computed in that precision.
- They compile ahead of time for sm_80 and sm_90, in every dtype, within the GPUs' shared
  memory: what the GPU compiler enforces and the interpreter does not (dot sizes >= 16, block
  shapes, layouts).
"""
import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import load_tool

from tnt_mm.models.backbones.tnt import TNT, TNTBlock
from tnt_mm.models.layers import LayerNorm
from tnt_mm.ops import (BackendUnavailableError, fused_norm, inner_backend, inner_transformer,
                        launch_settings, patch_update, select)
from tnt_mm.ops import triton_kernels
from tnt_mm.utils.cli import UsageError

# (word width, heads): TNT-Ti, TNT-S, TNT-B
WIDTHS = {'ti': (12, 2), 's': (24, 4), 'b': (40, 4)}


@pytest.fixture
def interpreter():
    """The triton backend forced, its kernels in Triton's interpreter (tests/conftest.py sets
    TRITON_INTERPRET=1 before anything imports Triton, as the interpreter needs)."""
    assert triton_kernels.interpreting()
    with inner_backend('triton'):
        yield


def random_block(width, heads, **kwargs) -> TNTBlock:
    block = TNTBlock(width, 16 * width, 16, heads, 4, **kwargs)
    for p in block.parameters():  # away from the init's zeros and ones: every term counts
        p.data.normal_(0, 0.3)
    return block


def grad_names(params) -> list:
    """The names of what :func:`run` returns gradients for, in its order."""
    return ['words'] + [n for n, t in zip(params._fields, params) if isinstance(t, torch.Tensor)]


def named(names, *columns):
    """``zip(names, *columns)``, after checking that every column has one entry per name."""
    assert all(len(c) == len(names) for c in columns), [len(c) for c in columns]
    return zip(names, *columns)


def run(params, words, grad_out, training=False):
    inputs = [words] + [t for t in params if isinstance(t, torch.Tensor)]
    out = inner_transformer(words, params, training)
    return out.detach(), torch.autograd.grad(out, inputs, grad_out)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| over max |b|, in float64."""
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


@pytest.mark.parametrize('arch', WIDTHS)
@pytest.mark.parametrize('patches', [1, 13])  # less than a tile; several tiles, the last partial
def test_float32_equals_reference(arch, patches, interpreter):
    """Outputs and the gradients of the words and of every weight, to 1e-4."""
    torch.manual_seed(patches)
    params = random_block(*WIDTHS[arch]).inner_params()
    words = torch.randn(patches, 16, WIDTHS[arch][0], requires_grad=True)
    grad_out = torch.randn(patches, 16, WIDTHS[arch][0])
    assert select(words, params, training=True) == 'triton'
    out, grads = run(params, words, grad_out)
    with inner_backend('reference'):
        ref, ref_grads = run(params, words, grad_out)
    assert relative_error(out, ref) < 1e-5
    for name, got, want in named(grad_names(params), grads, ref_grads):
        assert got.dtype == want.dtype and relative_error(got, want) < 1e-4, name


def test_stochastic_depth_equals_reference(interpreter):
    """Training with drop path: the same patches dropped (the same draws from the same seed)
    and the same gradients."""
    params = random_block(24, 4, drop_path=0.4).inner_params()
    words = torch.randn(37, 16, 24, requires_grad=True)
    grad_out = torch.randn(37, 16, 24)
    torch.manual_seed(3)
    out, grads = run(params, words, grad_out, training=True)
    with inner_backend('reference'):
        torch.manual_seed(3)
        ref, ref_grads = run(params, words, grad_out, training=True)
        torch.manual_seed(3)
        plain = inner_transformer(words, params, training=False)
    assert not torch.allclose(ref, plain)  # some patches were dropped
    assert relative_error(out, ref) < 1e-5
    for name, got, want in named(grad_names(params), grads, ref_grads):
        assert relative_error(got, want) < 1e-4, name


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('mode', ['autocast', 'half_weights'])
def test_half_precision_is_as_accurate_as_the_reference(dtype, mode, interpreter):
    """In half precision the kernels' error against the float32 result is at most twice the
    reference's own error in the same precision (autocast: float32 words and weights, dtype
    products; half_weights: a model in dtype), for the output and every gradient; outputs and
    gradients keep the dtypes the reference gives."""
    torch.manual_seed(0)
    block = random_block(24, 4)
    words = torch.randn(13, 16, 24)
    grad_out = torch.randn(13, 16, 24)
    exact = run(block.inner_params(), words.clone().requires_grad_(), grad_out)
    if mode == 'half_weights':
        block, words, grad_out = block.to(dtype), words.to(dtype), grad_out.to(dtype)
    params, words = block.inner_params(), words.requires_grad_()
    with torch.autocast('cpu', dtype=dtype, enabled=mode == 'autocast'):
        got = run(params, words, grad_out)
        with inner_backend('reference'):
            ref = run(params, words, grad_out)
    names = ['output'] + [f'grad {n}' for n in grad_names(params)]
    for name, g, r, e in named(names, [got[0], *got[1]], [ref[0], *ref[1]],
                               [exact[0], *exact[1]]):
        assert g.dtype == r.dtype and torch.isfinite(g).all(), name
        assert relative_error(g, e) <= 2 * relative_error(r, e) + 1e-3, name


def test_tuned_launch_settings_compute_the_same(interpreter, monkeypatch):
    """``TNT_MM_TRITON_LAUNCH=tuned`` (or ``launch_settings('tuned')``): in 16-bit dtypes at
    TNT-S's width the forward takes 4 patches a program and the backward 8, with the default's
    results (bf16 autocast, stochastic depth, the last tile partial); float32 and TNT-Ti's width
    keep the default; an unknown choice is refused by name."""
    launches = []
    launch = triton_kernels._launch
    monkeypatch.setattr(triton_kernels, '_launch',
                        lambda one: (launches.append((one.kernel, one.meta['P'], one.num_warps)),
                                     launch(one))[1])
    params = random_block(24, 4, drop_path=0.3).inner_params()
    words = torch.randn(13, 16, 24, requires_grad=True)
    grad_out = torch.randn(13, 16, 24)
    results = {}
    for choice in ('default', 'tuned'):
        launches.clear()
        torch.manual_seed(3)  # the same stochastic depth draws
        with launch_settings(choice), torch.autocast('cpu', dtype=torch.bfloat16):
            results[choice] = run(params, words, grad_out, training=True)
        results[choice + ' launches'] = list(launches)
    assert results['default launches'] == [('inner_transformer_fwd', 8, 4),
                                           ('inner_transformer_bwd', 4, 4)]
    assert results['tuned launches'] == [('inner_transformer_fwd', 4, 4),
                                         ('inner_transformer_bwd', 8, 4)]
    assert relative_error(results['tuned'][0], results['default'][0]) < 1e-6
    for name, got, want in named(grad_names(params), results['tuned'][1],
                                 results['default'][1]):
        assert relative_error(got, want) < 1e-5, name  # other tiles: other summation orders
    config = triton_kernels.launch_config(24, params, torch.float32)
    with launch_settings('tuned'):
        assert triton_kernels.settings_for(config) == triton_kernels.default_settings(config)
        ti = triton_kernels.launch_config(12, random_block(12, 2).inner_params(),
                                          torch.bfloat16)
        assert triton_kernels.settings_for(ti) == triton_kernels.default_settings(ti)
    monkeypatch.setenv('TNT_MM_TRITON_LAUNCH', 'tuned')
    bf16 = triton_kernels.launch_config(24, params, torch.bfloat16)
    assert triton_kernels.settings_for(bf16) == triton_kernels.tuned_settings(bf16)
    with launch_settings('default'):  # a context wins over the variable
        assert triton_kernels.settings_for(bf16) == triton_kernels.default_settings(bf16)
    monkeypatch.setenv('TNT_MM_TRITON_LAUNCH', 'fast')
    with pytest.raises(ValueError, match=r"TNT_MM_TRITON_LAUNCH='fast': one of \['default', "
                                         r"'tuned'\]"):
        inner_transformer(words, params)
    with pytest.raises(ValueError, match="launch settings 'fast': one of"):
        with launch_settings('fast'):
            pass


def run_normed(block, words, grads_out, training=False, normed_dtype=None):
    """The inner transformer with the words' patch norm: outputs and the gradients of the
    words, the inner weights and the norm's; the norm cast to ``normed_dtype`` first, as the
    projection after it casts it under autocast."""
    params = block.inner_params()
    inputs = [words] + [t for t in params if isinstance(t, torch.Tensor)] + list(
        block.norm1_proj.parameters())
    outs = inner_transformer(words, params, training, patch_norm=block.norm1_proj)
    assert len(outs) == len(grads_out) == 2
    if normed_dtype is not None:
        outs = outs[0], outs[1].to(normed_dtype)
    grads = torch.autograd.grad(outs, inputs, grads_out)
    return [o.detach() for o in outs], grads


@pytest.mark.parametrize('arch', WIDTHS)
@pytest.mark.parametrize('drop_path', [0., 0.4])
def test_fused_patch_norm_equals_reference(arch, drop_path, interpreter, monkeypatch):
    """TNT_MM_TRITON_FUSED_NORM=1: the kernels also write the words' LayerNorm over each patch
    (the words -> sentence norm) and take its gradient; outputs and every gradient (the
    norm's weights too) equal the reference's, the patches several tiles, the last partial."""
    width, heads = WIDTHS[arch]
    torch.manual_seed(2)
    block = random_block(width, heads, drop_path=drop_path)
    words = torch.randn(13, 16, width, requires_grad=True)
    grads_out = (torch.randn(13, 16, width), torch.randn(13, 16 * width))
    launches = []
    launch = triton_kernels._launch
    monkeypatch.setattr(triton_kernels, '_launch',
                        lambda one: (launches.append(one.meta['FUSE_NORM']), launch(one))[1])
    monkeypatch.setenv('TNT_MM_TRITON_FUSED_NORM', '1')
    torch.manual_seed(3)
    got, got_grads = run_normed(block, words, grads_out, training=True)
    assert launches == [True, True]  # forward and backward, both fused
    with inner_backend('reference'):
        torch.manual_seed(3)
        ref, ref_grads = run_normed(block, words, grads_out, training=True)
    for name, g, r in zip(['words', 'normed'], got, ref):
        assert g.shape == r.shape and relative_error(g, r) < 1e-5, name
    names = ['words'] + [n for n, t in zip(block.inner_params()._fields, block.inner_params())
                         if isinstance(t, torch.Tensor)] + ['norm1_proj.weight',
                                                            'norm1_proj.bias']
    assert len(got_grads) == len(ref_grads) == len(names)
    for name, g, r in zip(names, got_grads, ref_grads):
        assert g.dtype == r.dtype and relative_error(g, r) < 1e-4, name


def test_fused_patch_norm_under_autocast(interpreter, monkeypatch):
    """Under bfloat16 autocast the fused norm comes out in bfloat16 (the projection's input
    dtype) and is as accurate as the reference's norm cast to it."""
    torch.manual_seed(0)
    block = random_block(24, 4)
    words = torch.randn(13, 16, 24, requires_grad=True)
    grads_out = (torch.randn(13, 16, 24), torch.randn(13, 384))
    exact, exact_grads = run_normed(block, words, grads_out)
    monkeypatch.setenv('TNT_MM_TRITON_FUSED_NORM', '1')
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert inner_transformer(words, block.inner_params(),
                                 patch_norm=block.norm1_proj)[1].dtype == torch.bfloat16
        got, got_grads = run_normed(block, words, grads_out, normed_dtype=torch.bfloat16)
        with inner_backend('reference'):
            ref, ref_grads = run_normed(block, words, grads_out, normed_dtype=torch.bfloat16)
    names = ['words', 'normed', 'grad words'] + [
        f'grad {n}' for n, t in zip(block.inner_params()._fields, block.inner_params())
        if isinstance(t, torch.Tensor)] + ['grad norm1_proj.weight', 'grad norm1_proj.bias']
    results = list(zip(names, [*got, *got_grads], [*ref, *ref_grads], [*exact, *exact_grads]))
    assert len(results) == len(names)
    for name, g, r, e in results:
        assert g.dtype == r.dtype and torch.isfinite(g).all(), name
        assert relative_error(g, e) <= 2 * relative_error(r, e) + 1e-3, name


@pytest.mark.parametrize('fused', [False, True], ids=['', 'fused norm and update'])
def test_whole_model_trains_as_with_the_reference(fused, interpreter):
    """TNT-Ti with stochastic depth: a training step's features and every parameter's gradient
    with the triton backend (interpreted) equal the reference backend's; also with the opt-in
    words -> sentence norm and sentence update in the kernels."""
    torch.manual_seed(0)
    model = TNT('ti', out_type='featmap', out_indices=(1, 3), pretrain_img_size=64,
                drop_path_rate=0.1).train()
    x = torch.randn(2, 3, 64, 80)
    results = {}
    for backend in ('triton', 'reference'):
        model.zero_grad()
        torch.manual_seed(1)
        with inner_backend(backend), fused_norm(fused):
            feats = model(x)
        sum((f ** 2).mean() for f in feats).backward()
        results[backend] = ([f.detach() for f in feats],
                            {n: p.grad.clone() for n, p in model.named_parameters()})
    for name, a, b in named(['block 2', 'block 4'], results['triton'][0],
                            results['reference'][0]):
        assert relative_error(a, b) < 1e-4, name
    for name, grad in results['reference'][1].items():
        assert relative_error(results['triton'][1][name], grad) < 1e-3, name


@pytest.mark.parametrize('amp', [None, torch.bfloat16], ids=['float32', 'bf16 autocast'])
def test_sentence_update_equals_reference(amp, interpreter, monkeypatch):
    """The opt-in fused path's sentence update: one kernel each way; the new sentences and the
    gradients of the sentences, the projected words and the norm's weight and bias equal
    PyTorch's (LayerNorm, pad, sum), in float32 and with bfloat16 projected words under
    autocast; odd sizes, more patch tiles than backward programs."""
    torch.manual_seed(0)
    norm = random_block(12, 2).norm2_proj  # sentence width 192
    sentences = torch.randn(3, 8, 192, requires_grad=True)
    projected = torch.randn(3, 7, 192).to(amp or torch.float32).requires_grad_()
    grad = torch.randn(3, 8, 192)
    inputs = [sentences, projected, norm.weight, norm.bias]
    launches = []
    launch = triton_kernels._launch
    monkeypatch.setattr(triton_kernels, '_launch',
                        lambda one: (launches.append(one.kernel), launch(one))[1])
    results = {}
    for fused in (True, False):
        with fused_norm(fused), torch.autocast('cpu', dtype=torch.bfloat16,
                                               enabled=amp is not None):
            out = patch_update(sentences, projected, norm)
        results[fused] = [out, *torch.autograd.grad(out, inputs, grad)]
    assert launches == ['sentence_update_fwd', 'sentence_update_bwd']
    names = ['sentences', 'grad sentences', 'grad projected', 'grad weight', 'grad bias']
    for name, got, want in named(names, results[True], results[False]):
        tolerance = 1e-5 if want.dtype == torch.float32 else 1e-2  # one bfloat16 rounding
        assert got.dtype == want.dtype and relative_error(got, want) < tolerance, name


def test_sentence_update_runs_where_asked_and_says_why_not(monkeypatch):
    """The kernel takes the update only with the fused norm and the Triton backend forced (or
    ``auto`` on a GPU it was built for); what it cannot run it names, and PyTorch adds it."""
    reasons = triton_kernels.update_unsupported_reasons(
        torch.zeros(2, 5, 64, dtype=torch.float16), torch.zeros(2, 3, 64), None,
        torch.zeros(64))
    assert any('float16; the kernel adds to float32' in r for r in reasons), reasons
    assert any('shape (2, 3, 64) for sentences of shape (2, 5, 64)' in r for r in reasons)
    assert any('no weight or no bias' in r for r in reasons)
    taken = []
    monkeypatch.setattr(triton_kernels, 'sentence_update',
                        lambda sentences, *args: taken.append(True) or sentences)
    sentences, projected, norm = torch.zeros(2, 5, 64), torch.zeros(2, 4, 64), LayerNorm(64)
    for backend, fused, kernel in [('triton', True, True), ('triton', False, False),
                                   ('auto', True, False), ('reference', True, False)]:
        taken.clear()
        with inner_backend(backend), fused_norm(fused):
            out = patch_update(sentences.half(), projected, norm)  # PyTorch: half sentences
            assert not taken and out.dtype == torch.float32
            patch_update(sentences, projected, norm)
        assert taken == ([True] if kernel else []), (backend, fused)


def test_contract_names_what_it_cannot_run(monkeypatch):
    words = torch.randn(4, 16, 24)
    plain = TNTBlock(24, 384, 16, 4, 6).inner_params()
    unsupported = triton_kernels.inner_unsupported
    with monkeypatch.context() as patch:
        patch.setattr(triton_kernels, 'interpreting', lambda: False)
        assert 'the input is on cpu; the Triton kernels run on CUDA tensors' in unsupported(
            words, plain, training=False)
    assert unsupported(words, plain, training=True) is None
    assert 'torch.float64' in unsupported(words.double(), plain, training=False)
    assert '(N, 16, C)' in unsupported(torch.randn(4, 9, 24), plain, training=False)
    assert 'word width 80' in unsupported(torch.randn(4, 16, 80), TNTBlock(80, 1280, 16, 4, 8)
                                          .inner_params(), training=False)
    assert 'head width 24' in unsupported(words, TNTBlock(24, 384, 16, 1, 6).inner_params(),
                                          training=False)
    assert 'bias' in unsupported(words, TNTBlock(24, 384, 16, 4, 6, qkv_bias=True)
                                 .inner_params(), training=False)
    dropout = TNTBlock(24, 384, 16, 4, 6, drop=0.1).inner_params()
    assert 'dropout in training' in unsupported(words, dropout, training=True)
    assert unsupported(words, dropout, training=False) is None  # dropout is off in eval
    # stochastic depth is computed by the kernels
    assert unsupported(words, TNTBlock(24, 384, 16, 4, 6, drop_path=0.1).inner_params(),
                       training=True) is None


def test_auto_picks_triton_on_gpu_tensors_only_and_forced_triton_says_why(monkeypatch):
    """auto takes the Triton kernels for CUDA tensors where they can run the input (here CPU
    tensors stand in for CUDA ones: built_for patched, the interpreter) and the reference where
    they cannot;
    CPU tensors keep the cpu backend even where the interpreter could run them. A forced
    triton that cannot run raises."""
    assert triton_kernels.interpreting()  # tests/conftest.py
    words = torch.randn(4, 16, 24)
    params = TNTBlock(24, 384, 16, 4, 6).inner_params()
    assert select(words, params, training=False) == 'cpu_fused'
    monkeypatch.setattr(triton_kernels, 'built_for', lambda device: True)
    assert select(words, params, training=False) == 'triton'
    # the kernels have no dropout (and neither have the CPU kernels, which the CPU tensors
    # standing in for CUDA ones would reach)
    dropout = TNTBlock(24, 384, 16, 4, 6, attn_drop=0.1).inner_params()
    assert select(words, dropout, training=True) == 'reference'
    monkeypatch.undo()
    # GPUs the kernels were not built for (before sm_80, or AMD) keep the reference
    assert not triton_kernels.built_for(words.device)
    gpu = torch.device('cuda', 0)
    for capability, hip, built in (((7, 5), None, False), ((8, 0), None, True),
                                   ((9, 0), None, True), ((9, 4), '6.2', False)):
        monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda d, c=capability: c)
        monkeypatch.setattr(torch.version, 'hip', hip)
        assert triton_kernels.built_for(gpu) is built, (capability, hip)
    monkeypatch.setenv('TNT_MM_INNER_BACKEND', 'triton')
    assert select(words, params, training=False) == 'triton'
    monkeypatch.setattr(triton_kernels, 'interpreting', lambda: False)
    with pytest.raises(BackendUnavailableError, match=r'"triton" was requested but cannot run '
                                                      r'this input .*on cpu.*TRITON_INTERPRET=1'):
        inner_transformer(words, params)


def test_compiled_graphs_call_the_kernels_as_custom_ops_when_asked(monkeypatch):
    """Under torch.compile a forced triton backend runs the kernels as custom ops in one graph
    (fullgraph: no break), with the reference's outputs and gradients; auto keeps the reference
    ops in graphs, and torch.export refuses a forced triton."""
    launches = []
    launch = triton_kernels._launch
    monkeypatch.setattr(triton_kernels, '_launch',
                        lambda one: (launches.append(one.kernel), launch(one))[1])
    params = random_block(24, 4).inner_params()
    words = torch.randn(5, 16, 24, requires_grad=True)
    grad_out = torch.randn(5, 16, 24)
    inputs = [words] + [t for t in params if isinstance(t, torch.Tensor)]
    compiled = torch.compile(lambda w: inner_transformer(w, params), fullgraph=True)
    with inner_backend('reference'):
        expected = run(params, words, grad_out)
    torch._dynamo.reset()
    with inner_backend('triton'):
        out = compiled(words)
        got = out.detach(), torch.autograd.grad(out, inputs, grad_out)
    assert launches == ['inner_transformer_fwd', 'inner_transformer_bwd']
    assert relative_error(got[0], expected[0]) < 1e-4
    for name, g, e in named(grad_names(params), got[1], expected[1]):
        assert relative_error(g, e) < 1e-4, name
    launches.clear()
    torch._dynamo.reset()
    monkeypatch.setattr(triton_kernels, 'built_for', lambda device: True)  # eager auto would
    torch.autograd.grad(compiled(words), inputs, grad_out)
    assert launches == []

    class Inner(torch.nn.Module):
        def forward(self, w):
            return inner_transformer(w, params)

    with inner_backend('triton'), pytest.raises(Exception, match='torch.export graphs keep'):
        torch.export.export(Inner(), (words.detach(),))


@pytest.mark.slow
def test_a_compiled_training_step_runs_the_kernels_and_trains_as_eager(interpreter, monkeypatch):
    """check_triton_gpu.py's training steps (its check 6), on the CPU: a whole TNT training
    step under torch.compile (forward and backward graphs, the kernels as custom ops in both)
    launches the kernels every step and gives eager's losses, AdamW steps included; the graph
    replays refuse CPU tensors."""
    tool = load_tool('tools/analysis/check_triton_gpu.py')
    launches = []
    launch = triton_kernels._launch
    monkeypatch.setattr(triton_kernels, '_launch',
                        lambda one: (launches.append(one.kernel), launch(one))[1])
    arch = dict(inner_dim=12, inner_heads=2, outer_dim=48, outer_heads=2, depth=1)
    x = torch.randn(2, 3, 32, 48)
    runs = {}
    for mode in ('eager', 'compiled'):
        torch.manual_seed(0)
        model = TNT(arch, out_type='cls_token').train()
        launches.clear()
        torch._dynamo.reset()
        runs[mode] = tool.training_run(model, x, mode, steps=2, warmup=1)
        assert launches == ['inner_transformer_fwd', 'inner_transformer_bwd'] * 3, (mode, launches)
        assert runs[mode]['ms'] > 0
    assert len(runs['compiled']['losses']) == 3
    assert runs['compiled']['losses'][-1] < runs['compiled']['losses'][0]  # it trains
    for step, got, expected in named(['step 1', 'step 2', 'step 3'],
                                     runs['compiled']['losses'], runs['eager']['losses']):
        assert abs(got - expected) <= 1e-5 * abs(expected), (step, got, expected)
    for mode in ('reduce-overhead', 'cuda-graph'):
        with pytest.raises(ValueError, match=f'mode {mode!r} replays CUDA graphs; the input '
                                             f'is on cpu'):
            tool.training_run(model, x, mode, steps=1)


def test_double_backward_raises(interpreter):
    params = random_block(24, 4).inner_params()
    words = torch.randn(3, 16, 24, requires_grad=True)
    with pytest.raises(RuntimeError, match='double backward through the Triton inner '
                                           'transformer is not supported; use the reference'):
        torch.autograd.grad(inner_transformer(words, params).sum(), words, create_graph=True)


# ------------------------------------------------------------------ ahead-of-time compilation
@pytest.mark.slow
def test_every_kernel_compiles_for_a100_and_h100():
    """tools/analysis/compile_triton_kernels.py compiles both kernels of Ti/S/B, in float32,
    float16 and bfloat16, for sm_80 and sm_90, within each GPU's shared memory (in a process
    without the interpreter, which compiles nothing): with stochastic depth, the variant with
    the most state (without it the kernels only lose a load and a product; TNT-S's bf16 pair
    stands for them); the fused-norm kernels and the sentence update of TNT-B; the opt-in tuned
    launch settings. (The tool's default, both stochastic-depth variants, is the full check of
    a kernel change; the suite keeps to this for its time: about 4 min cold for all 72.)"""
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    tool = [sys.executable, 'tools/analysis/compile_triton_kernels.py']
    result = subprocess.run(tool + ['--fused-norm', 'without', '--drop-path', 'with'], env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split() for line in result.stdout.splitlines()
            if line.startswith('inner_transformer_')]
    compiled = {(r[0], r[1], r[2], r[3], r[5]) for r in rows}
    assert len(compiled) == 2 * 3 * 3 * 2  # kernels x widths x dtypes x targets
    assert {r[3] for r in rows} == {'yes'} and {r[5] for r in rows} == {'sm_80', 'sm_90'}
    assert all(0 < float(r[6]) <= {'sm_80': 163, 'sm_90': 227}[r[5]] for r in rows)
    result = subprocess.run(tool + ['--fused-norm', 'without', '--drop-path', 'without',
                                    '--arch', 's', '--dtype', 'bf16'],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split() for line in result.stdout.splitlines()
            if line.startswith('inner_transformer_')]
    assert len(rows) == 2 * 2 and {r[3] for r in rows} == {'no'}
    # the opt-in fused words -> sentence norm, at TNT-B's width (the most state per program)
    result = subprocess.run(tool + ['--fused-norm', 'with', '--drop-path', 'with', '--arch', 'b',
                                    '--dtype', 'fp32', 'bf16'],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split() for line in result.stdout.splitlines()
            if line.startswith('inner_transformer_')]
    assert len(rows) == 2 * 2 * 2 and all(r[4] == 'fused' for r in rows)
    # and its sentence update, at TNT-B's sentence width (640)
    rows = [line.split() for line in result.stdout.splitlines()
            if line.startswith('sentence_update_')]
    assert len(rows) == 2 * 2 * 2
    assert all(0 < float(r[6]) <= {'sm_80': 163, 'sm_90': 227}[r[5]] for r in rows)
    # the opt-in tuned launch settings where they differ from the default (TNT-S's forward
    # and backward, TNT-B's forward), with the fused norm: the most state per program
    result = subprocess.run(tool + ['--launch', 'tuned', '--fused-norm', 'with', '--drop-path',
                                    'with', '--arch', 's', 'b', '--dtype', 'bf16'],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split() for line in result.stdout.splitlines()
            if line.startswith('inner_transformer_')]
    assert sorted((r[0], r[1], r[5], r[9]) for r in rows) == sorted(
        (kernel, arch, target, setting) for kernel, arch, setting in (
            ('inner_transformer_fwd', 's', '4x4'), ('inner_transformer_bwd', 's', '8x4'),
            ('inner_transformer_fwd', 'b', '4x4')) for target in ('sm_80', 'sm_90'))
    assert all(0 < float(r[6]) <= {'sm_80': 163, 'sm_90': 227}[r[5]] for r in rows)


def test_compile_tool_refuses_the_interpreter():
    assert os.environ['TRITON_INTERPRET'] == '1'  # tests/conftest.py
    with pytest.raises(UsageError, match='TRITON_INTERPRET=1 runs kernels in the interpreter'):
        load_tool('tools/analysis/compile_triton_kernels.py').main([])
    with pytest.raises(UsageError, match='--capability 75 is not one of'):
        load_tool('tools/analysis/compile_triton_kernels.py').main(['--capability', '75'])


def test_tune_tool_times_every_setting_current_first(tmp_path, capsys):
    """tools/analysis/tune_triton_kernels.py in the interpreter (its times mean nothing there):
    every setting asked for is timed, the current one first (a setting that faults on a GPU
    leaves the CUDA context unusable), forward settings with more warps than patches are
    skipped (they faulted on an H200), and the records reach the JSON file."""
    out = tmp_path / 'tune.json'
    assert load_tool('tools/analysis/tune_triton_kernels.py').main(
        ['--arch', 'ti', '--dtype', 'fp32', '--patches', '3', '--forward-patches', '4', '8',
         '--forward-warps', '4', '8', '--backward-patches', '4', '--backward-warps', '4',
         '--json', str(out)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith('ti ')]
    assert 'patches  4 warps 8 skipped' in lines[0]
    timed = [line for line in lines if 'skipped' not in line]
    assert timed[0].endswith('(current)') and 'forward  patches  8 warps 4' in timed[0]
    records = json.loads(out.read_text())['records']
    assert {(r['kernel'], r['patches'], r['warps']) for r in records} == {
        ('forward', 4, 4), ('forward', 8, 4), ('forward', 8, 8), ('backward', 4, 4)}
    assert all(r['ms'] > 0 for r in records)


# ------------------------------------------------------------------ on a GPU
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason='needs a CUDA GPU (the interpreter tests above check the kernels '
                           'without one)')
def test_kernels_on_a_gpu_equal_the_reference():
    """tools/analysis/check_triton_gpu.py: outputs, gradients, stochastic depth and training
    steps on the GPU (in a process without the interpreter)."""
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    result = subprocess.run([sys.executable, 'tools/analysis/check_triton_gpu.py'], env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_gpu_check_tool_without_a_gpu_says_so(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with pytest.raises(UsageError, match='no CUDA GPU'):
        load_tool('tools/analysis/check_triton_gpu.py').main([])


def test_eager_calls_take_the_plain_autograd_function(interpreter, monkeypatch):
    """Eager code skips the custom-op layer (the cheaper path on the host); the custom ops are
    for compiled graphs (the test above)."""
    calls = []
    monkeypatch.setattr(triton_kernels, '_forward_op',
                        lambda *args: calls.append('custom op') or None)
    params = random_block(24, 4).inner_params()
    words = torch.randn(3, 16, 24, requires_grad=True)
    with inner_backend('triton'):
        out = inner_transformer(words, params)
    assert calls == [] and type(out.grad_fn).__name__ == '_InnerTransformerBackward'
    out.sum().backward()
    assert words.grad is not None and all(p.grad is not None for p in params
                                          if isinstance(p, torch.Tensor) and p.requires_grad)
