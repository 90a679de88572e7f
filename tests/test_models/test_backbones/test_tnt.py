"""Shapes, strides, gradients, options, and errors of the TNT backbone."""
import math

import pytest
import torch
from helpers import randomise_

from tnt_mm.models import TNT
from tnt_mm.models.layers import resample_pos_embed

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


def test_inner_transformer_only_in_chosen_blocks():
    model = TNT('small', out_type='cls_token', inner_block_indices=(0, 3, 7, 11))
    has_inner = [block.has_inner for block in model.blocks]
    assert [i for i, h in enumerate(has_inner) if h] == [0, 3, 7, 11]
    assert not hasattr(model.blocks[1], 'attn_in')
    full = TNT('small', out_type='cls_token')
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in full.parameters())


def test_inner_params_are_the_modules_current_weights():
    """The block reads its inner weights from the modules' registries (the fast path); what it
    returns is what attribute access gives, also after a weight or a module is replaced, and a
    module that keeps its weight elsewhere (a parametrization) falls back to attribute access."""
    from torch.nn.utils import parametrize

    from tnt_mm.models.backbones.tnt import TNTBlock

    def by_attributes(block):
        attn, mlp = block.attn_in, block.mlp_in
        return [block.norm_in.weight, block.norm_in.bias, attn.qk.weight, attn.qk.bias,
                attn.v.weight, attn.v.bias, attn.proj.weight, attn.proj.bias,
                block.norm_mlp_in.weight, block.norm_mlp_in.bias, mlp.fc1.weight, mlp.fc1.bias,
                mlp.fc2.weight, mlp.fc2.bias, attn.num_heads, block.norm_in.eps,
                attn.attn_drop_rate, attn.proj_drop.p, block.drop_path_rate]

    def same(params, expected):
        return len(params) == len(expected) and all(
            a is b or (torch.is_tensor(a) and torch.equal(a, b)) or a == b
            for a, b in zip(params, expected))

    block = TNTBlock(24, 384, 16, 4, 6, qkv_bias=True, drop=0.1, attn_drop=0.2, drop_path=0.3)
    assert same(block.inner_params(), by_attributes(block))
    assert all(a is b for a, b in zip(block.inner_params()[:14], by_attributes(block)))
    block.attn_in.v.weight = torch.nn.Parameter(torch.randn(24, 24))
    block.mlp_in.fc1 = torch.nn.Linear(24, 96)
    assert block.inner_params().v_weight is block.attn_in.v.weight
    assert block.inner_params().fc1_weight is block.mlp_in.fc1.weight

    class Doubled(torch.nn.Module):
        def forward(self, weight):
            return 2 * weight

    parametrize.register_parametrization(block.attn_in.qk, 'weight', Doubled())
    params = block.inner_params()
    assert 'weight' not in block.attn_in.qk._parameters
    assert torch.equal(params.qk_weight, 2 * block.attn_in.qk.parametrizations.weight.original)
    assert same(params, by_attributes(block))


def test_stochastic_depth_schedule_and_eval_determinism():
    model = TNT('tiny', out_type='cls_token', drop_path_rate=0.1)
    rates = [getattr(b.drop_path, 'p', 0.0) for b in model.blocks]
    assert rates[0] == 0.0 and abs(rates[-1] - 0.1) < 1e-6 and rates == sorted(rates)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x)[0], model(x)[0])


@pytest.mark.parametrize('depth, expected', [(12, (2, 5, 8, 11)), (6, (1, 2, 4, 5)),
                                             (4, (0, 1, 2, 3)), (9, (2, 4, 6, 8))])
def test_default_out_indices_are_the_quarter_points(depth, expected):
    """A custom depth works with default arguments: the pyramid takes the blocks that end each
    quarter of the network (blocks 3/6/9/12 of 12)."""
    arch = dict(inner_dim=8, inner_heads=2, outer_dim=64, outer_heads=4, depth=depth)
    model = TNT(arch)
    assert model.out_indices == expected and len(model.blocks) == depth
    outs = model(torch.randn(1, 3, 48, 48))
    assert [o.shape[-2:] for o in outs] == [(12, 12), (6, 6), (3, 3), (2, 2)]
    assert TNT(arch, out_type='cls_token').out_indices == (depth - 1,)


def test_depth_without_quarter_points_asks_for_out_indices():
    arch = dict(inner_dim=8, inner_heads=2, outer_dim=64, outer_heads=4, depth=3)
    with pytest.raises(ValueError, match='depth=3 has no four distinct quarter points.*give '
                                         'out_indices'):
        TNT(arch)
    assert len(TNT(arch, out_indices=(0, 1, 2), pyramid_scales=(2.0, 1.0, 0.5))(
        torch.randn(1, 3, 32, 32))) == 3


def test_arch_aliases():
    assert TNT('ti').arch_settings == TNT('TINY').arch_settings
    assert TNT('s').arch_settings == TNT('small').arch_settings


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
