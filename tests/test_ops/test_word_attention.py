"""The fused CPU kernels (word attention, whole inner transformer): equal to the reference
modules, used only where they may be."""
import pytest
import torch
import torch.nn.functional as F

from tnt_mm.models.backbones.tnt import TNT, TNTBlock
from tnt_mm.ops import cpu_kernels
from tnt_mm.ops.cpu_kernels import kernel_applies, load_extension, word_attention


def reference(qk: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    n, words, c = v.shape
    q, k = qk.reshape(n, words, 2, heads, c // heads).permute(2, 0, 3, 1, 4)
    v = v.reshape(n, words, heads, c // heads).transpose(1, 2)
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, words, c)


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


@pytest.mark.parametrize('heads,head_dim', [(2, 6), (4, 6), (4, 10), (3, 8)])
@pytest.mark.parametrize('patches', [1, 7, 300])
def test_kernel_equals_sdpa(heads, head_dim, patches):
    torch.manual_seed(patches)
    c = heads * head_dim
    # large logits too: the softmax must subtract its maximum
    qk = torch.randn(patches, 16, 2 * c) * 4
    v = torch.randn(patches, 16, c)
    expected = reference(qk, v, heads)
    assert torch.allclose(word_attention(qk, v, heads), expected, atol=1e-5, rtol=1e-5)
    # a strided (non-contiguous) view is read correctly
    wide = torch.randn(patches, 16, 3 * c)
    assert torch.allclose(word_attention(wide[..., :2 * c], v, heads),
                          reference(wide[..., :2 * c], v, heads), atol=1e-5, rtol=1e-5)


def test_kernel_rejects_bad_shapes():
    with pytest.raises(RuntimeError, match=r'expects qk \(N, 16, 2C\)'):
        load_extension().word_attention(torch.randn(2, 9, 24), torch.randn(2, 9, 12), 2, 1.0)
    with pytest.raises(RuntimeError, match='head widths 6, 8 and 10'):
        load_extension().word_attention(torch.randn(2, 16, 24), torch.randn(2, 16, 12), 3, 1.0)


def test_kernel_scope():
    """Only CPU float32 on 16 words, without dropout on the attention weights."""
    x = torch.randn(4, 16, 24)
    with torch.no_grad():
        assert kernel_applies(x, 6)
        assert not kernel_applies(x.double(), 6)
        assert not kernel_applies(torch.randn(4, 17, 24), 6)
        assert not kernel_applies(x, 4)
        assert not kernel_applies(x, 6, attn_drop=0.1)
    assert kernel_applies(x, 6)  # training too: the kernel has its backward


@pytest.mark.parametrize('heads,head_dim', [(2, 6), (4, 6), (4, 10), (3, 8)])
def test_kernel_gradients_equal_sdpa(heads, head_dim):
    torch.manual_seed(heads * head_dim)
    c = heads * head_dim
    qk = (torch.randn(37, 16, 2 * c) * 3).requires_grad_()
    v = torch.randn(37, 16, c, requires_grad=True)
    grad_out = torch.randn(37, 16, c)
    grads = torch.autograd.grad(word_attention(qk, v, heads), (qk, v), grad_out)
    expected = torch.autograd.grad(reference(qk, v, heads), (qk, v), grad_out)
    for got, want in zip(grads, expected):
        assert torch.allclose(got, want, atol=3e-5, rtol=1e-4), (got - want).abs().max()
    # only once differentiable: a second derivative raises instead of being silently wrong
    # (the first-order gradient comes out without a graph)
    out = word_attention(qk, v, heads)
    (grad_qk,) = torch.autograd.grad(out.sum(), qk, create_graph=True)
    with pytest.raises(RuntimeError, match='does not require grad|once_differentiable'):
        grad_qk.sum().backward()


def test_switch_off(monkeypatch):
    monkeypatch.setattr(cpu_kernels, '_extension', None)
    monkeypatch.setenv(cpu_kernels.ENV_SWITCH, '0')
    with torch.no_grad():
        assert not kernel_applies(torch.randn(4, 16, 24), 6)


# the paper's models take the fused inner transformer; a custom width (head 8, not among
# INNER_SHAPES) takes the word-attention kernel alone
CUSTOM = dict(inner_dim=16, inner_heads=2, outer_dim=96, outer_heads=2, depth=3)


@pytest.mark.parametrize('arch, kernel', [('ti', 'inner_transformer'), ('s', 'inner_transformer'),
                                          ('b', 'inner_transformer'), (CUSTOM, 'word_attention')])
def test_backbone_inference_equals_reference(arch, kernel, monkeypatch):
    """The whole backbone gives the same features with and without the kernels."""
    torch.manual_seed(0)
    model = TNT(arch, out_type='featmap', out_indices=(1, 2)).eval()
    x = torch.randn(1, 3, 64, 96)
    calls = []
    real = getattr(cpu_kernels, kernel)

    def counted(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(f'tnt_mm.models.backbones.tnt.{kernel}', counted)
    with torch.no_grad():
        fast = model(x)
    assert len(calls) == len(model.blocks)  # every block's inner transformer took the kernel
    monkeypatch.setattr(cpu_kernels, '_extension', False)  # as if it could not be built
    with torch.no_grad():
        slow = model(x)
    assert len(calls) == len(model.blocks)
    for a, b in zip(fast, slow):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('inner_dim, heads', [(12, 2), (24, 4), (40, 4)])
@pytest.mark.parametrize('patches', [1, 13])  # fewer than one tile of 8 patches; a partial tile
def test_inner_transformer_equals_reference(inner_dim, heads, patches):
    """The fused inner transformer: outputs and the gradients of the words and of every weight
    equal the modules it replaces."""
    torch.manual_seed(0)
    block = TNTBlock(inner_dim, 16 * inner_dim, 16, heads, 4)
    for p in block.parameters():  # away from the init's zeros and ones: every term counts
        p.data.normal_(0, 0.3)
    words = torch.randn(patches, 16, inner_dim, requires_grad=True)
    grad_out = torch.randn(patches, 16, inner_dim)
    params = [words] + list(block.parameters())

    def run():
        out = block.forward_inner(words)
        grads = torch.autograd.grad(out, params, grad_out, allow_unused=True)
        return out.detach(), grads

    assert block.inner_kernel_applies(words)
    fast, fast_grads = run()
    with cpu_kernels.reference_attention():
        assert not block.inner_kernel_applies(words)
        slow, slow_grads = run()
    assert torch.allclose(fast, slow, atol=2e-5, rtol=1e-5)
    names = ['words'] + [n for n, _ in block.named_parameters()]
    for name, a, b in zip(names, fast_grads, slow_grads):
        if b is None:  # the outer transformer's weights: not used by forward_inner
            assert a is None, name
            continue
        assert (a - b).abs().max() <= 1e-5 * b.abs().max() + 1e-6, name


def test_inner_transformer_scope():
    """Dropout and stochastic depth are the modules' work in training; in eval they are
    identities, so the kernel runs there. Widths outside INNER_SHAPES never take it."""
    words = torch.randn(4, 16, 24)
    plain = TNTBlock(24, 384, 16, 4, 6)
    dropping = TNTBlock(24, 384, 16, 4, 6, drop_path=0.1)
    assert plain.train().inner_kernel_applies(words)
    assert not dropping.train().inner_kernel_applies(words)
    assert dropping.eval().inner_kernel_applies(words)
    assert not TNTBlock(24, 384, 16, 4, 6, qkv_bias=True).inner_kernel_applies(words)
    assert not TNTBlock(16, 256, 16, 2, 4).inner_kernel_applies(torch.randn(4, 16, 16))
    assert not plain.inner_kernel_applies(words.double())
    with pytest.raises(RuntimeError, match='does not require grad|once_differentiable'):
        w = words.clone().requires_grad_()
        out = plain.forward_inner(w)
        (g,) = torch.autograd.grad(out.sum(), w, create_graph=True)
        g.sum().backward()


def test_profiler_names_the_kernels():
    """A profile of inference accounts for the kernels' time under their own names (a call into
    the extension is invisible to torch.profiler otherwise)."""
    inner = TNTBlock(24, 384, 16, 4, 6).eval()
    other_width = TNTBlock(16, 256, 16, 2, 4).eval()  # inner transformer by modules, word kernel
    with torch.no_grad(), torch.profiler.profile() as prof:
        inner.forward_inner(torch.randn(8, 16, 24))
        other_width.forward_inner(torch.randn(8, 16, 16))
    names = {event.name for event in prof.events()}
    assert {'tnt_mm::inner_transformer', 'tnt_mm::word_attention'} <= names


@pytest.mark.parametrize('recompute_inner', [False, True])
def test_backbone_training_equals_reference(recompute_inner):
    """A training step's loss and every gradient are the same with and without the kernel."""
    torch.manual_seed(0)
    model = TNT('ti', out_type='featmap', out_indices=(1, 3), pretrain_img_size=64,
                recompute_inner=recompute_inner).train()
    x = torch.randn(2, 3, 64, 80)

    def loss_and_grads():
        model.zero_grad()
        loss = sum((f ** 2).mean() for f in model(x))
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    fast_loss, fast = loss_and_grads()
    with cpu_kernels.reference_attention():
        slow_loss, slow = loss_and_grads()
    assert torch.allclose(fast_loss, slow_loss, atol=1e-6, rtol=1e-5)
    for name, grad in slow.items():
        assert torch.allclose(fast[name], grad, atol=1e-6, rtol=1e-4), name


def test_reference_attention_context():
    x = torch.randn(4, 16, 24)
    with torch.no_grad():
        with cpu_kernels.reference_attention():
            assert not kernel_applies(x, 6)
        assert kernel_applies(x, 6)


def test_export_sees_the_reference_op():
    """torch.export traces the model: the exported graph must hold SDPA, not the kernel call."""
    model = TNT('ti', out_type='cls_token', pretrain_img_size=32).eval()
    with torch.no_grad():
        program = torch.export.export(model, (torch.randn(1, 3, 32, 32),))
    ops = {str(node.target) for node in program.graph.nodes if node.op == 'call_function'}
    assert any('scaled_dot_product' in op for op in ops), sorted(ops)
