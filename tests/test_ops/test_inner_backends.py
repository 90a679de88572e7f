"""The inner transformer's backends: the fused CPU kernels equal their references, the dispatch
picks them only where their contracts hold, and a forced backend that cannot run says why."""
import pytest
import torch

from tnt_mm.models.backbones.tnt import TNT, TNTBlock
from tnt_mm.ops import (BackendUnavailableError, cpu_kernels, dispatch, inner_backend,
                        inner_transformer, reference, select)
from tnt_mm.ops.cpu_kernels import load_extension


def block_with_random_weights(inner_dim, heads, **kwargs) -> TNTBlock:
    block = TNTBlock(inner_dim, 16 * inner_dim, 16, heads, 4, **kwargs)
    for p in block.parameters():  # away from the init's zeros and ones: every term counts
        p.data.normal_(0, 0.3)
    return block


def test_kernel_builds():
    # The machines this project supports have a C++ compiler (mmcv is built from source), so a
    # failed build is a bug to see, not a case to skip.
    assert load_extension() is not None


def test_fast_exp_and_erf_are_accurate():
    """The kernels' inline exp (softmax) and erf (GELU and its derivative), checked in the
    vectorised loop they run in, against float64, beyond the ranges the network reaches."""
    ext = load_extension()
    x = torch.cat([torch.linspace(-100, 88, 200001), torch.linspace(-1, 1, 20001)])
    exp, erf = ext.fast_math(x)
    exact = x.double()
    within = x >= -87  # below, exp_fast clamps: e^-87 = 1.6e-38 instead of 0 or a denormal
    rel = ((exp.double() - exact.exp()) / exact.exp())[within].abs().max().item()
    assert rel < 5e-7, f'exp_fast relative error {rel:.1e}'
    assert (exp[~within] <= 2e-38).all() and (exp[~within] >= 0).all()
    err = (erf.double() - torch.special.erf(exact)).abs().max().item()
    assert err < 5e-7, f'erf_fast absolute error {err:.1e}'
    assert (erf.abs() <= 1 + 3e-7).all()


# ------------------------------------------------------------------ word-attention kernel
@pytest.mark.parametrize('heads,head_dim', [(2, 6), (4, 6), (4, 10), (3, 8)])
@pytest.mark.parametrize('patches', [1, 7, 300])
def test_word_attention_kernel_equals_reference(heads, head_dim, patches):
    torch.manual_seed(patches)
    c = heads * head_dim
    # large logits too: the softmax must subtract its maximum
    qk = torch.randn(patches, 16, 2 * c) * 4
    v = torch.randn(patches, 16, c)
    expected = reference.word_attention(qk, v, heads)
    assert torch.allclose(cpu_kernels.word_attention(qk, v, heads), expected,
                          atol=1e-5, rtol=1e-5)
    # a strided (non-contiguous) view is read correctly
    wide = torch.randn(patches, 16, 3 * c)
    assert torch.allclose(cpu_kernels.word_attention(wide[..., :2 * c], v, heads),
                          reference.word_attention(wide[..., :2 * c], v, heads),
                          atol=1e-5, rtol=1e-5)


def test_word_attention_kernel_rejects_bad_shapes():
    with pytest.raises(RuntimeError, match=r'expects qk \(N, 16, 2C\)'):
        load_extension().word_attention(torch.randn(2, 9, 24), torch.randn(2, 9, 12), 2, 1.0)
    with pytest.raises(RuntimeError, match='head widths 6, 8 and 10'):
        load_extension().word_attention(torch.randn(2, 16, 24), torch.randn(2, 16, 12), 3, 1.0)


def test_word_attention_contract():
    """CPU float32 on 16 words, head width 6, 8 or 10, no dropout; each refusal says why."""
    x = torch.randn(4, 16, 24)
    unsupported = cpu_kernels.word_attention_unsupported
    assert unsupported(x, 6) is None
    assert 'torch.float64' in unsupported(x.double(), 6)
    assert '(N, 16, C)' in unsupported(torch.randn(4, 17, 24), 6)
    assert 'head width 4' in unsupported(x, 4)
    assert 'attention dropout 0.1' in unsupported(x, 6, dropout_p=0.1)
    assert 'meta' in unsupported(x.to('meta'), 6)


@pytest.mark.parametrize('heads,head_dim', [(2, 6), (4, 6), (4, 10), (3, 8)])
def test_word_attention_kernel_gradients_equal_reference(heads, head_dim):
    torch.manual_seed(heads * head_dim)
    c = heads * head_dim
    qk = (torch.randn(37, 16, 2 * c) * 3).requires_grad_()
    v = torch.randn(37, 16, c, requires_grad=True)
    grad_out = torch.randn(37, 16, c)
    grads = torch.autograd.grad(cpu_kernels.word_attention(qk, v, heads), (qk, v), grad_out)
    expected = torch.autograd.grad(reference.word_attention(qk, v, heads), (qk, v), grad_out)
    for got, want in zip(grads, expected):
        assert torch.allclose(got, want, atol=3e-5, rtol=1e-4), (got - want).abs().max()
    # only once differentiable: a second derivative raises instead of being silently wrong
    # (the first-order gradient comes out without a graph)
    out = cpu_kernels.word_attention(qk, v, heads)
    (grad_qk,) = torch.autograd.grad(out.sum(), qk, create_graph=True)
    with pytest.raises(RuntimeError, match='does not require grad|once_differentiable'):
        grad_qk.sum().backward()


# ------------------------------------------------------------------ fused inner transformer
@pytest.mark.parametrize('inner_dim, heads', [(12, 2), (24, 4), (40, 4)])
@pytest.mark.parametrize('patches', [1, 13])  # fewer than one tile of 8 patches; a partial tile
def test_fused_inner_transformer_equals_reference(inner_dim, heads, patches):
    """Outputs and the gradients of the words and of every weight."""
    torch.manual_seed(0)
    block = block_with_random_weights(inner_dim, heads)
    params = block.inner_params()
    words = torch.randn(patches, 16, inner_dim, requires_grad=True)
    grad_out = torch.randn(patches, 16, inner_dim)
    inputs = [words] + list(block.parameters())

    def run(fn):
        out = fn(words, params)
        return out.detach(), torch.autograd.grad(out, inputs, grad_out, allow_unused=True)

    assert cpu_kernels.inner_unsupported(words, params, training=True) is None
    fast, fast_grads = run(cpu_kernels.inner_transformer)
    slow, slow_grads = run(reference.inner_transformer)
    assert torch.allclose(fast, slow, atol=2e-5, rtol=1e-5)
    names = ['words'] + [n for n, _ in block.named_parameters()]
    for name, a, b in zip(names, fast_grads, slow_grads):
        if b is None:  # the outer transformer's weights: not used by the inner transformer
            assert a is None, name
            continue
        assert (a - b).abs().max() <= 1e-5 * b.abs().max() + 1e-6, name
    with pytest.raises(RuntimeError, match='does not require grad|once_differentiable'):
        out = cpu_kernels.inner_transformer(words, params)
        (g,) = torch.autograd.grad(out.sum(), words, create_graph=True)
        g.sum().backward()


def test_fused_inner_transformer_contract():
    """Dropout and stochastic depth only in eval (where they are identities); the paper's
    widths, no qkv bias, a 4c MLP. Each refusal says why."""
    words = torch.randn(4, 16, 24)
    unsupported = cpu_kernels.inner_unsupported
    plain = TNTBlock(24, 384, 16, 4, 6).inner_params()
    dropping = TNTBlock(24, 384, 16, 4, 6, drop_path=0.1).inner_params()
    assert unsupported(words, plain, training=True) is None
    assert 'dropout or stochastic depth' in unsupported(words, dropping, training=True)
    assert unsupported(words, dropping, training=False) is None
    assert 'bias' in unsupported(words, TNTBlock(24, 384, 16, 4, 6, qkv_bias=True).inner_params(),
                                 training=False)
    assert '(16, 8)' in unsupported(torch.randn(4, 16, 16), TNTBlock(16, 256, 16, 2, 4)
                                    .inner_params(), training=False)
    assert 'MLP is 48 wide' in unsupported(words, TNTBlock(24, 384, 16, 4, 6, mlp_ratio=2.)
                                           .inner_params(), training=False)
    assert 'torch.float64' in unsupported(words.double(), plain, training=False)


def test_profiler_names_the_kernels():
    """A profile of inference accounts for the kernels' time under their own names (a call into
    the extension is invisible to torch.profiler otherwise)."""
    inner = TNTBlock(24, 384, 16, 4, 6).eval()
    other_width = TNTBlock(16, 256, 16, 2, 4).eval()  # reference inner, word-attention kernel
    with torch.no_grad(), torch.profiler.profile() as prof:
        inner_transformer(torch.randn(8, 16, 24), inner.inner_params())
        inner_transformer(torch.randn(8, 16, 16), other_width.inner_params())
    names = {event.name for event in prof.events()}
    assert {'tnt_mm::inner_transformer', 'tnt_mm::word_attention'} <= names


# ------------------------------------------------------------------ the dispatch
def test_auto_picks_the_fastest_implementation_that_applies():
    words = torch.randn(4, 16, 24)
    plain = TNTBlock(24, 384, 16, 4, 6).inner_params()
    dropping = TNTBlock(24, 384, 16, 4, 6, drop_path=0.1).inner_params()
    attn_dropping = TNTBlock(24, 384, 16, 4, 6, attn_drop=0.1).inner_params()
    assert select(words, plain, training=True) == 'cpu_fused'
    assert select(words, dropping, training=True) == 'cpu_attention'
    assert select(words, attn_dropping, training=True) == 'reference'
    assert select(words, attn_dropping, training=False) == 'cpu_fused'
    assert select(words.double(), plain, training=False) == 'reference'


def test_environment_variable_and_context_force_a_backend(monkeypatch):
    words = torch.randn(4, 16, 24)
    params = TNTBlock(24, 384, 16, 4, 6).inner_params()
    monkeypatch.setenv('TNT_MM_INNER_BACKEND', 'reference')
    assert select(words, params, training=False) == 'reference'
    with inner_backend('cpu'):  # the context wins over the environment
        assert select(words, params, training=False) == 'cpu_fused'
        with inner_backend('reference'):
            assert select(words, params, training=False) == 'reference'
        assert select(words, params, training=False) == 'cpu_fused'
    monkeypatch.setenv('TNT_MM_INNER_BACKEND', ' CPU ')
    assert select(words, params, training=False) == 'cpu_fused'
    monkeypatch.setenv('TNT_MM_INNER_BACKEND', 'cuda')
    with pytest.raises(ValueError, match=r"TNT_MM_INNER_BACKEND='cuda' is not an inner-transformer "
                                         r"backend; choose one of \('auto', 'reference', 'cpu', "
                                         r"'triton'\)"):
        select(words, params, training=False)
    with pytest.raises(ValueError, match="inner_backend='gpu'"):
        with inner_backend('gpu'):
            pass


def test_forced_cpu_backend_that_cannot_run_says_why(monkeypatch):
    params = TNTBlock(24, 384, 16, 4, 6, attn_drop=0.1).inner_params()
    monkeypatch.setenv('TNT_MM_INNER_BACKEND', 'cpu')
    with pytest.raises(BackendUnavailableError,
                       match=r'"cpu" was requested but cannot run this input .*float64.*: '
                             r'cpu_fused: the input is torch.float64.* \| '
                             r'cpu_attention: the input is torch.float64'):
        inner_transformer(torch.randn(4, 16, 24).double(), params)
    # every reason of every candidate, not the first
    with pytest.raises(BackendUnavailableError,
                       match=r'cpu_fused: dropout or stochastic depth[^|]*float64[^|]* \| '
                             r'cpu_attention: attention dropout 0.1[^|]*; the input is '
                             r'torch.float64'):
        inner_transformer(torch.randn(4, 16, 24).double(), params, training=True)
    with pytest.raises(BackendUnavailableError, match='dropout or stochastic depth.*'
                                                      'attention dropout 0.1'):
        inner_transformer(torch.randn(4, 16, 24), params, training=True)
    # the extension cannot be built: auto falls back, a forced cpu names the build error
    monkeypatch.setattr(cpu_kernels, '_extension', False)
    monkeypatch.setattr(cpu_kernels, '_build_error', 'OSError: no compiler')
    words = torch.randn(4, 16, 24)
    plain = TNTBlock(24, 384, 16, 4, 6).inner_params()
    with pytest.raises(BackendUnavailableError, match='could not be built.*no compiler'):
        select(words, plain, training=False)
    monkeypatch.setenv('TNT_MM_INNER_BACKEND', 'auto')
    assert select(words, plain, training=False) == 'reference'


def test_the_choice_is_made_once_per_signature(monkeypatch):
    """The backends' reasons are asked once per input signature; another batch size reuses the
    choice, another dtype, mode or setting decides again."""
    asked = []
    fused = dispatch.REGISTRY[1]
    monkeypatch.setattr(dispatch, 'REGISTRY', (dispatch.REGISTRY[0], fused._replace(
        not_supported_reasons=lambda *args: asked.append(args[0].shape) or
        fused.not_supported_reasons(*args)), *dispatch.REGISTRY[2:]))
    monkeypatch.setattr(dispatch, '_choices', {})
    params = TNTBlock(24, 384, 16, 4, 6).inner_params()
    assert select(torch.randn(4, 16, 24), params, training=False) == 'cpu_fused'
    assert select(torch.randn(9, 16, 24), params, training=False) == 'cpu_fused'
    assert len(asked) == 1
    assert select(torch.randn(4, 16, 24).double(), params, training=False) == 'reference'
    with torch.autocast('cpu', dtype=torch.bfloat16):
        select(torch.randn(4, 16, 24), params, training=False)
    with inner_backend('reference'):  # never asks the fused kernel
        select(torch.randn(4, 16, 24), params, training=False)
    assert len(asked) == 3


def test_old_switch_names_still_work_with_a_warning(monkeypatch):
    words = torch.randn(4, 16, 24)
    params = TNTBlock(24, 384, 16, 4, 6).inner_params()
    monkeypatch.delenv('TNT_MM_INNER_BACKEND', raising=False)
    monkeypatch.setenv('TNT_MM_WORD_KERNEL', '0')
    with pytest.warns(FutureWarning, match='TNT_MM_WORD_KERNEL=0 is deprecated.*'
                                           'TNT_MM_INNER_BACKEND=reference'):
        assert select(words, params, training=False) == 'reference'
    monkeypatch.delenv('TNT_MM_WORD_KERNEL')
    with pytest.warns(FutureWarning, match=r"reference_attention\(\) is deprecated"):
        with dispatch.reference_attention():
            assert select(words, params, training=False) == 'reference'


def loss_and_grads(model, x, backend, monkeypatch):
    monkeypatch.setenv('TNT_MM_INNER_BACKEND', backend)
    model.zero_grad()
    outs = model(x)
    loss = sum((f ** 2).mean() for f in outs)
    loss.backward()
    return [o.detach() for o in outs], {n: p.grad.clone() for n, p in model.named_parameters()}


# the paper's models take the fused inner transformer; a custom width (head 8, not among the
# fused kernel's shapes) takes the word-attention kernel alone
CUSTOM = dict(inner_dim=16, inner_heads=2, outer_dim=96, outer_heads=2, depth=3)


@pytest.mark.parametrize('arch, kernel', [('ti', 'inner_transformer'), ('s', 'inner_transformer'),
                                          ('b', 'inner_transformer'), (CUSTOM, 'word_attention')])
def test_reference_and_cpu_backends_agree_in_inference(arch, kernel, monkeypatch):
    """TNT_MM_INNER_BACKEND=cpu runs the kernel in every block and gives the features of
    TNT_MM_INNER_BACKEND=reference."""
    torch.manual_seed(0)
    model = TNT(arch, out_type='featmap', out_indices=(1, 2)).eval()
    x = torch.randn(1, 3, 64, 96)
    calls = []
    real = getattr(cpu_kernels, kernel)

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(cpu_kernels, kernel, counted)
    feats = {}
    for backend in ('cpu', 'reference'):
        monkeypatch.setenv('TNT_MM_INNER_BACKEND', backend)
        with torch.no_grad():
            feats[backend] = model(x)
        assert len(calls) == len(model.blocks)  # the kernel ran in every block, with cpu only
    for a, b in zip(feats['cpu'], feats['reference']):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('kwargs', [
    dict(recompute_inner=False), dict(recompute_inner=True),
    dict(drop_path_rate=0.1),  # blocks 1+ run the reference with the word-attention kernel
], ids=['stored', 'recomputed', 'drop-path'])
def test_reference_and_cpu_backends_agree_in_training(kwargs, monkeypatch):
    """A training step's outputs and every gradient are the same on both backends."""
    torch.manual_seed(0)
    model = TNT('ti', out_type='featmap', out_indices=(1, 3), pretrain_img_size=64,
                **kwargs).train()
    x = torch.randn(2, 3, 64, 80)
    results = {}
    for backend in ('cpu', 'reference'):
        torch.manual_seed(1)  # the same stochastic-depth draws
        results[backend] = loss_and_grads(model, x, backend, monkeypatch)
    (cpu_outs, cpu_grads), (ref_outs, ref_grads) = results['cpu'], results['reference']
    for a, b in zip(cpu_outs, ref_outs):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)
    for name, grad in ref_grads.items():
        assert torch.allclose(cpu_grads[name], grad, atol=1e-6, rtol=1e-4), name


def test_export_sees_the_reference_op(monkeypatch):
    """torch.export traces the model: the exported graph holds SDPA, not the kernel call; a
    forced cpu backend cannot be exported and says so."""
    model = TNT('ti', out_type='cls_token', pretrain_img_size=32).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        program = torch.export.export(model, (x,))
    ops = {str(node.target) for node in program.graph.nodes if node.op == 'call_function'}
    assert any('scaled_dot_product' in op for op in ops), sorted(ops)
    monkeypatch.setenv('TNT_MM_INNER_BACKEND', 'cpu')
    with pytest.raises(Exception, match='torch.compile / torch.export graphs keep the '
                                        'reference ops'):
        with torch.no_grad():
            torch.export.export(model, (x,))


@pytest.mark.parametrize('limit', [1, 8, 13])  # one head per call; chunks with a remainder
def test_chunked_word_attention_equals_unchunked(limit, monkeypatch):
    """Large batches of patches are attended in chunks below the backends' limits: the same
    outputs and gradients as one call (here with the limit forced down)."""
    torch.manual_seed(0)
    heads, c = 4, 24
    qk = torch.randn(37, 16, 2 * c, requires_grad=True)
    v = torch.randn(37, 16, c, requires_grad=True)
    grad_out = torch.randn(37, 16, c)
    whole = reference.word_attention(qk, v, heads)
    whole_grads = torch.autograd.grad(whole, (qk, v), grad_out)
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def counted(q, *args, **kwargs):
        calls.append(q.shape[0] * q.shape[1])
        return sdpa(q, *args, **kwargs)

    monkeypatch.setattr(reference, 'MAX_ATTENTION_BATCH', limit)
    monkeypatch.setattr(reference.F, 'scaled_dot_product_attention', counted)
    chunked = reference.word_attention(qk, v, heads)
    chunked_grads = torch.autograd.grad(chunked, (qk, v), grad_out)
    assert len(calls) > 1 and max(calls) <= max(limit, heads) and sum(calls) == 37 * heads
    assert torch.allclose(chunked, whole, atol=1e-6)
    for a, b in zip(chunked_grads, whole_grads):
        assert torch.allclose(a, b, atol=1e-6)


def test_word_attention_kernel_declines_under_autocast():
    """Under CPU autocast the projections before the attention are half precision: the
    reference computes the attention (the fused inner transformer stays float32)."""
    words = torch.randn(4, 16, 24)
    dropping = TNTBlock(24, 384, 16, 4, 6, drop_path=0.1).inner_params()
    plain = TNTBlock(24, 384, 16, 4, 6).inner_params()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert select(words, dropping, training=True) == 'reference'
        assert select(words, plain, training=True) == 'cpu_fused'
        assert 'autocast' in cpu_kernels.word_attention_unsupported(words, 6)
