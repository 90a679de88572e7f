"""The fused CPU word-attention kernel: equal to the reference op, used only where it may be."""
import pytest
import torch
import torch.nn.functional as F

from tnt_mm.models.backbones.tnt import TNT
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
    """Only CPU float32 inference on 16 words; training keeps the reference op and autograd."""
    x = torch.randn(4, 16, 24)
    with torch.no_grad():
        assert kernel_applies(x, 6)
        assert not kernel_applies(x.double(), 6)
        assert not kernel_applies(torch.randn(4, 17, 24), 6)
        assert not kernel_applies(x, 4)
    assert not kernel_applies(x, 6)  # grad enabled


def test_switch_off(monkeypatch):
    monkeypatch.setattr(cpu_kernels, '_extension', None)
    monkeypatch.setenv(cpu_kernels.ENV_SWITCH, '0')
    with torch.no_grad():
        assert not kernel_applies(torch.randn(4, 16, 24), 6)


@pytest.mark.parametrize('arch', ['ti', 's', 'b'])
def test_backbone_inference_equals_reference(arch, monkeypatch):
    """The whole backbone gives the same features with and without the kernel."""
    torch.manual_seed(0)
    model = TNT(arch, out_type='featmap', out_indices=(2, 11)).eval()
    x = torch.randn(1, 3, 64, 96)
    calls = []
    real = cpu_kernels.word_attention

    def counted(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr('tnt_mm.models.backbones.tnt.word_attention', counted)
    with torch.no_grad():
        fast = model(x)
    assert len(calls) == 12  # every block's inner attention took the kernel
    monkeypatch.setattr(cpu_kernels, '_extension', False)  # as if it could not be built
    with torch.no_grad():
        slow = model(x)
    assert len(calls) == 12
    for a, b in zip(fast, slow):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)


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
