"""Invariants that every TNT variant keeps, whatever it returns.

One table of variants (the paper's sizes, the SE and partial-inner variants of the supplement,
the legacy layout, block checkpointing) crossed with the three output types.
"""
import math

import pytest
import torch
from helpers import randomise_

from tnt_mm.models import TNT

VARIANTS = {
    'ti': dict(arch='tiny'),
    's': dict(arch='small'),
    'b': dict(arch='base'),
    's+se': dict(arch='small', with_se=True),
    'legacy': dict(arch='small', layout='legacy'),
    'partial-inner': dict(arch='tiny', inner_block_indices=(0, 3, 7, 11)),
    'with_cp': dict(arch='tiny', with_cp=True),
    'custom-depth-6': dict(arch=dict(inner_dim=16, inner_heads=2, outer_dim=64, outer_heads=2,
                                     depth=6)),
}
OUT_TYPES = ('pyramid', 'featmap', 'cls_token')
HEIGHT, WIDTH = 48, 80  # a 3x5 patch grid: odd, non-square


@pytest.fixture(params=list(VARIANTS), ids=list(VARIANTS))
def variant(request):
    return VARIANTS[request.param]


def expected_shapes(model: TNT, batch: int):
    dim = model.embed_dims
    grid = (math.ceil(HEIGHT / 16), math.ceil(WIDTH / 16))
    if model.out_type == 'cls_token':
        return [(batch, dim)] * len(model.out_indices)
    if model.out_type == 'featmap':
        return [(batch, dim, *grid)] * len(model.out_indices)
    # stride 16 rescaled by each level's factor; pooling rounds up
    return [(batch, dim, math.ceil(grid[0] * s), math.ceil(grid[1] * s))
            for s in model.pyramid.scale_factors]


@pytest.mark.parametrize('out_type', OUT_TYPES)
def test_outputs_have_the_promised_shapes_and_are_finite(variant, out_type):
    model = TNT(out_type=out_type, **variant).eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, HEIGHT, WIDTH))
    assert [tuple(o.shape) for o in outs] == expected_shapes(model, 2)
    if out_type == 'pyramid':  # strides 4, 8, 16, 32 by default
        assert model.pyramid.scale_factors == (4.0, 2.0, 1.0, 0.5)
    assert all(torch.isfinite(o).all() for o in outs)


@pytest.mark.parametrize('out_type', OUT_TYPES)
def test_every_parameter_gets_a_gradient(variant, out_type):
    torch.manual_seed(0)
    model = TNT(out_type=out_type, **variant).train()
    outs = model(torch.randn(2, 3, HEIGHT, WIDTH))
    sum(o.float().pow(2).mean() for o in outs).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not no_grad, f'parameters without gradient: {no_grad}'
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_checkpointing_changes_memory_not_numbers(variant):
    """Block checkpointing (with_cp) and the recomputed inner transformer (recompute_inner, the
    default) give the outputs and gradients of a plain forward, with dropout and stochastic
    depth replayed identically in the recomputation."""
    kwargs = dict(variant, out_type='pyramid', drop_rate=0.1, drop_path_rate=0.2)
    kwargs.pop('with_cp', None)
    plain = randomise_(TNT(with_cp=False, recompute_inner=False, **kwargs)).train()
    others = [TNT(with_cp=False, recompute_inner=True, **kwargs).train(),
              TNT(with_cp=True, **kwargs).train()]
    x = torch.randn(2, 3, HEIGHT, WIDTH)
    outs, grads = [], []
    for model in [plain] + others:
        model.load_state_dict(plain.state_dict())
        torch.manual_seed(3)
        out = model(x)
        sum(o.square().mean() for o in out).backward()
        outs.append(out)
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for other_outs, other_grads in zip(outs[1:], grads[1:]):
        for a, b in zip(outs[0], other_outs):
            assert torch.allclose(a, b, atol=1e-6)
        for name, grad in grads[0].items():
            assert torch.allclose(grad, other_grads[name], atol=1e-5, rtol=1e-4), name


def test_eval_is_deterministic_and_state_dict_round_trips(variant):
    model = randomise_(TNT(out_type='featmap', drop_path_rate=0.1, drop_rate=0.1,
                           **variant)).eval()
    copy = TNT(out_type='featmap', **variant).eval()
    copy.load_state_dict(model.state_dict())  # strict: the same keys and shapes
    x = torch.randn(1, 3, HEIGHT, WIDTH)
    with torch.no_grad():
        for a, b, c in zip(model(x), model(x), copy(x)):
            assert torch.equal(a, b) and torch.equal(a, c)
