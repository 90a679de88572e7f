"""Autocast (bf16, fp16) on the CPU: finite losses and gradients, the matrix products in half
precision, and every LayerNorm in float32, as CUDA's autocast runs them."""
import pytest
import torch
from helpers import randomise_

from tnt_mm.models import TNT
from tnt_mm.models.layers import LayerNorm, LayerNorm2d

HALF = [torch.bfloat16, torch.float16]
VARIANTS = {'official': dict(arch='tiny'), 'legacy+se': dict(arch='tiny', layout='legacy',
                                                                  with_se=True)}


@pytest.mark.parametrize('dtype', HALF, ids=['bf16', 'fp16'])
@pytest.mark.parametrize('variant', list(VARIANTS))
def test_autocast_training_step(variant, dtype):
    torch.manual_seed(0)
    model = randomise_(TNT(out_type='pyramid', drop_path_rate=0.1, **VARIANTS[variant])).train()
    norm_dtypes, product_dtypes = set(), set()
    for module in model.modules():
        if isinstance(module, (LayerNorm, LayerNorm2d)):
            module.register_forward_hook(lambda m, a, out: norm_dtypes.add(out.dtype))
        elif isinstance(module, torch.nn.Linear):
            module.register_forward_hook(lambda m, a, out: product_dtypes.add(out.dtype))
    with torch.autocast('cpu', dtype=dtype):
        outs = model(torch.randn(2, 3, 48, 80))
        loss = sum(o.float().square().mean() for o in outs)
    loss.backward()
    assert norm_dtypes == {torch.float32}  # the word -> sentence LN(d) after a half product too
    assert product_dtypes == {dtype}
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize('dtype', HALF, ids=['bf16', 'fp16'])
def test_autocast_inference_is_close_to_float32(dtype):
    """Half-precision products, float32 norms and residual streams: the features stay within
    the precision of the products."""
    torch.manual_seed(0)
    model = randomise_(TNT('tiny', out_type='featmap')).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        exact = model(x)
        with torch.autocast('cpu', dtype=dtype):
            half = model(x)
    for a, b in zip(half, exact):
        scale = b.abs().max()
        assert (a.float() - b).abs().max() <= (0.05 if dtype == torch.bfloat16 else 0.01) * scale


def test_layer_norm_unchanged_outside_autocast():
    norm = LayerNorm(8)
    x = torch.randn(4, 8, dtype=torch.bfloat16)
    assert norm.to(torch.bfloat16)(x).dtype == torch.bfloat16  # a bf16 model stays bf16
    y = torch.randn(4, 8)
    assert torch.equal(LayerNorm(8)(y), torch.nn.LayerNorm(8)(y))
