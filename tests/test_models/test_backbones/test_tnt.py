"""Shapes, strides, gradients, options, and errors of the TNT backbone."""
import math

import pytest
import torch
from helpers import randomise_

from tnt_mm.models import TNT
from tnt_mm.models.backbones.tnt import resample_pos_embed

SIZES = [(224, 224), (160, 256), (100, 150)]  # square, non-square, not multiples of 16


def grid_of(height, width):
    return math.ceil(height / 16), math.ceil(width / 16)


@pytest.mark.parametrize('height,width', SIZES)
def test_pyramid_strides(height, width):
    model = TNT('tiny').eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, height, width))
    hp, wp = grid_of(height, width)
    # strides 4, 8, 16, 32 of the image zero-padded to a multiple of 16; the odd grid of the
    # 100x150 case rounds up at stride 32, so every level covers the whole image
    expected = [(math.ceil(16 * hp / s), math.ceil(16 * wp / s)) for s in (4, 8, 16, 32)]
    assert [tuple(o.shape[-2:]) for o in outs] == expected
    assert all(o.shape[:2] == (2, 192) for o in outs)


@pytest.mark.parametrize('height,width', SIZES)
def test_featmap_and_cls_token_shapes(height, width):
    x = torch.randn(2, 3, height, width)
    featmap = TNT('tiny', out_type='featmap', out_indices=(-1, 3)).eval()
    with torch.no_grad():
        feats = featmap(x)
    assert [tuple(f.shape) for f in feats] == [(2, 192, *grid_of(height, width))] * 2
    cls = TNT('tiny', out_type='cls_token').eval()
    with torch.no_grad():
        (token,) = cls(x)
    assert token.shape == (2, 192)


def test_featmap_is_raw_block_output_in_requested_order():
    model = randomise_(TNT('tiny', out_type='featmap', out_indices=(11, 2))).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        last, third = model(x)
        words, sentences, grid = model.embed(x)
        for i, block in enumerate(model.blocks):
            words, sentences = block(words, sentences)
            if i == 2:
                expected_third = sentences[:, 1:].transpose(1, 2).reshape(1, 192, *grid)
    assert torch.equal(third, expected_third)
    assert torch.equal(last, sentences[:, 1:].transpose(1, 2).reshape(1, 192, *grid))


def test_remainder_is_zero_padded():
    """A 100x150 image gives the same features as the same image zero-padded to 112x160."""
    model = randomise_(TNT('tiny', out_type='featmap')).eval()
    x = torch.randn(1, 3, 100, 150)
    padded = torch.nn.functional.pad(x, (0, 10, 0, 12))
    with torch.no_grad():
        for a, b in zip(model(x), model(padded)):
            assert torch.equal(a, b)


def test_position_embedding_resampling():
    pos = torch.randn(1, 1 + 14 * 14, 8)
    assert resample_pos_embed(pos, (14, 14), (14, 14), 1) is pos
    resized = resample_pos_embed(pos, (14, 14), (20, 30), 1)
    assert resized.shape == (1, 1 + 600, 8)
    assert torch.equal(resized[:, :1], pos[:, :1])  # class token untouched
    constant = torch.ones(1, 196, 8)
    assert torch.allclose(resample_pos_embed(constant, (14, 14), (7, 9)), torch.ones(1, 63, 8))
    with pytest.raises(ValueError, match='not 10x10'):
        resample_pos_embed(pos, (10, 10), (5, 5), 1)


@pytest.mark.parametrize('kwargs', [
    dict(out_type='pyramid'),
    dict(out_type='featmap', out_indices=(1, 3)),
    dict(out_type='cls_token'),
    dict(out_type='cls_token', with_se=True, drop_path_rate=0.1),
    dict(out_type='pyramid', inner_block_indices=(0, 3, 7, 11), layout='legacy'),
    dict(out_type='pyramid', pyramid_norm=None),
], ids=['pyramid', 'featmap', 'cls_token', 'se-droppath', 'table5-legacy', 'pyramid-no-norm'])
def test_every_parameter_gets_a_gradient(kwargs):
    torch.manual_seed(0)
    model = TNT('tiny', **kwargs).train()
    outs = model(torch.randn(2, 3, 64, 64))
    sum(o.float().pow(2).mean() for o in outs).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not no_grad, f'parameters without gradient: {no_grad}'
    for out in outs:
        assert torch.isfinite(out).all()


def test_pyramid_norm_choice():
    """'LN' normalises every level's pixels over the channels; None leaves them as the
    convolutions (with bias) wrote them, at the same strides."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        normed = TNT('tiny', pyramid_channels=32).eval()(x)
        raw = TNT('tiny', pyramid_channels=32, pyramid_norm=None).eval()(x)
    for a, b in zip(normed, raw):
        assert a.shape == b.shape
        assert torch.allclose(a.mean(1), torch.zeros(()), atol=1e-4)  # LN's weight 1, bias 0
        assert torch.allclose(a.var(1, unbiased=False), torch.ones(()), atol=1e-2)
        assert not torch.allclose(b.var(1, unbiased=False), torch.ones(()), atol=1e-1)


def test_only_used_blocks_are_built():
    assert len(TNT('tiny', out_type='featmap', out_indices=(1, 3)).blocks) == 4
    assert len(TNT('tiny', out_type='cls_token').blocks) == 12
    assert TNT('tiny').norm is None and TNT('tiny', out_type='cls_token').norm is not None


def test_checkpointed_forward_equals_plain():
    torch.manual_seed(0)
    plain = randomise_(TNT('tiny', out_type='pyramid', with_se=True)).train()
    checkpointed = TNT('tiny', out_type='pyramid', with_se=True, with_cp=True).train()
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 80)
    outs = [model(x) for model in (plain, checkpointed)]
    for a, b in zip(*outs):
        assert torch.allclose(a, b, atol=1e-6)
    for model, out in zip((plain, checkpointed), outs):
        sum(o.sum() for o in out).backward()
    for (name, p1), (_, p2) in zip(plain.named_parameters(), checkpointed.named_parameters()):
        assert torch.allclose(p1.grad, p2.grad, atol=1e-5, rtol=1e-4), name


def test_recomputed_inner_transformer_equals_stored():
    """recompute_inner (the default) changes memory, not numbers: same outputs and gradients,
    with dropout and stochastic depth replayed identically in the recomputation."""
    kwargs = dict(arch='tiny', out_type='featmap', drop_rate=0.1, drop_path_rate=0.2)
    stored = randomise_(TNT(recompute_inner=False, **kwargs)).train()
    recomputed = TNT(recompute_inner=True, **kwargs).train()
    recomputed.load_state_dict(stored.state_dict())
    x = torch.randn(2, 3, 48, 64)
    grads = []
    for model in (stored, recomputed):
        torch.manual_seed(3)
        outs = model(x)
        sum(o.square().mean() for o in outs).backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
        if model is stored:
            expected = [o.detach() for o in outs]
    for a, b in zip(expected, outs):
        assert torch.allclose(a, b, atol=1e-6)
    for name, grad in grads[0].items():
        assert torch.allclose(grad, grads[1][name], atol=1e-6, rtol=1e-5), name


def test_inner_transformer_only_in_chosen_blocks():
    model = TNT('small', out_type='cls_token', inner_block_indices=(0, 3, 7, 11))
    has_inner = [block.has_inner for block in model.blocks]
    assert [i for i, h in enumerate(has_inner) if h] == [0, 3, 7, 11]
    assert not hasattr(model.blocks[1], 'attn_in')
    full = TNT('small', out_type='cls_token')
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in full.parameters())


def test_stochastic_depth_schedule_and_eval_determinism():
    model = TNT('tiny', out_type='cls_token', drop_path_rate=0.1)
    rates = [getattr(b.drop_path, 'p', 0.0) for b in model.blocks]
    assert rates[0] == 0.0 and abs(rates[-1] - 0.1) < 1e-6 and rates == sorted(rates)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x)[0], model(x)[0])


@pytest.mark.parametrize('arch,expected', [
    ('ti', (12, 2, 192, 3)), ('tiny', (12, 2, 192, 3)), ('s', (24, 4, 384, 6)),
    ('SMALL', (24, 4, 384, 6)), ('b', (40, 4, 640, 10)), ('base', (40, 4, 640, 10)),
])
def test_arch_zoo(arch, expected):
    settings = TNT(arch, out_type='featmap', out_indices=0).arch_settings
    assert (settings['inner_dim'], settings['inner_heads'], settings['outer_dim'],
            settings['outer_heads'], settings['depth']) == (*expected, 12)


def test_custom_arch():
    arch = dict(inner_dim=8, inner_heads=2, outer_dim=64, outer_heads=4, depth=6)
    model = TNT(arch, out_indices=(1, 2, 3, 5))
    outs = model(torch.randn(1, 3, 48, 48))
    assert [o.shape[1] for o in outs] == [64] * 4


@pytest.mark.parametrize('kwargs,message', [
    (dict(arch='large'), r"arch='large' is unknown"),
    (dict(arch=dict(inner_dim=8, outer_dim=64, depth=6)), r"missing \['inner_heads', 'outer_heads'\]"),
    (dict(arch=dict(inner_dim=8, inner_heads=3, outer_dim=64, outer_heads=4, depth=2),
          out_indices=(0, 1, 1, 1)), 'names the same block twice'),
    (dict(arch=dict(inner_dim=8, inner_heads=3, outer_dim=64, outer_heads=4, depth=2),
          out_type='featmap', out_indices=0), 'not divisible by num_heads=3'),
    (dict(out_indices=(2, 5, 8, 12)), r'\[12\] out of range.*valid indices are -12..11'),
    (dict(out_indices=(-13,)), r'\[-13\] out of range'),
    (dict(out_indices=()), 'out_indices is empty'),
    (dict(out_indices=(2, 5, 8)), 'pyramid_scales=.* has 4 entries'),
    (dict(out_type='tokens'), "out_type='tokens' is not supported"),
    (dict(layout='huawei'), "layout='huawei' is not supported"),
    (dict(inner_block_indices=(20,)), r'inner_block_indices=\(20,\) has \[20\] out of range'),
    (dict(pyramid_scales=(8.0, 2.0, 1.0, 0.5)), 'scale factor 8.0 is not supported'),
    (dict(pyramid_norm='BN'),
     r"pyramid norm 'BN' is not supported; use one of \('LN', None\)"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises((ValueError, NotImplementedError), match=message):
        TNT(**kwargs)


def test_bad_input():
    model = TNT('tiny', out_type='cls_token')
    with pytest.raises(ValueError, match=r'built for 3-channel images.*got 1 channels'):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r'\(B, C, H, W\)'):
        model(torch.randn(3, 32, 32))
    gray = TNT('tiny', out_type='cls_token', in_channels=1)
    assert gray(torch.randn(1, 1, 32, 32))[0].shape == (1, 192)
