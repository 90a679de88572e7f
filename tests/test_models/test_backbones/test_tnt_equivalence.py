"""The backbone equals the reference implementations after conversion (random weights).

References: timm's ``tnt_s_patch16_224``, ``tnt_b_patch16_224`` and
``tnt_s_legacy_patch16_224``, and mmpretrain's ``TNT``. The official Huawei key layout is built
from a timm model with the inverse of timm's own ``checkpoint_filter_fn`` (checked against it),
so it is tested on the same numbers. Every weight goes through the real path: a file written by
``tools/model_converters/tnt2mm.py``, loaded by ``init_cfg=dict(type='Pretrained')``.
"""
import argparse

import pytest
import timm
import torch
from helpers import load_tool, max_abs_diff, randomise_
from mmpretrain.models.backbones import TNT as MMPretrainTNT
from timm.models.tnt import checkpoint_filter_fn

from tnt_mm.models import TNT
from tnt_mm.utils.cli import UserError

TOLERANCE = 1e-4
BLOCKS = (2, 5, 8, 11)
tnt2mm = load_tool('tools/model_converters/tnt2mm.py')

# timm key component -> official (Huawei) name: the inverse of timm's checkpoint_filter_fn.
TIMM_TO_OFFICIAL = {
    'pixel_embed': 'patch_embed', 'patch_pos': 'outer_pos', 'pixel_pos': 'inner_pos',
    'norm1_proj': 'proj_norm1', 'norm2_proj': 'proj_norm2', 'norm_in': 'inner_norm1',
    'attn_in': 'inner_attn', 'norm_mlp_in': 'inner_norm2', 'mlp_in': 'inner_mlp',
    'norm_out': 'outer_norm1', 'attn_out': 'outer_attn', 'norm_mlp': 'outer_norm2',
    'mlp': 'outer_mlp',
}


def to_official_layout(timm_model) -> dict:
    out = {}
    for key, value in timm_model.state_dict().items():
        key = '.'.join(TIMM_TO_OFFICIAL.get(part, part) for part in key.split('.'))
        if key == 'inner_pos':  # official: (1, m, c); timm: (1, c, s, s)
            value = value.flatten(2).transpose(1, 2).contiguous()
        out[key] = value.clone()
    num_patches = out['outer_pos'].shape[1] - 1
    out['outer_tokens'] = torch.zeros(1, num_patches, out['outer_pos'].shape[-1])
    return out


def timm_reference(name):
    model = randomise_(timm.create_model(name, pretrained=False)).eval()

    def run(x):
        with torch.no_grad():
            final, feats = model.forward_intermediates(x, indices=list(BLOCKS))
        return feats, final[:, 0], model.forward_head(final)
    return model, run


def mmpretrain_reference():
    model = randomise_(MMPretrainTNT(arch='s'))
    model.eval()  # mmpretrain's train() returns None, so no chaining
    captured = {}
    for i in BLOCKS:
        # mmpretrain writes into its activations in place; keep a copy of each block output
        model.layers[i].register_forward_hook(
            lambda mod, args, out, i=i: captured.__setitem__(i, out[1][:, 1:].clone()))

    def run(x):
        with torch.no_grad():
            cls = model(x)[0]
        batch, _, height, width = x.shape
        feats = [captured[i].reshape(batch, height // 16, width // 16, -1).permute(0, 3, 1, 2)
                 for i in BLOCKS]
        return feats, cls, None
    return model, run


def write_source(kind, name, tmp_path):
    """Return (path of a checkpoint in the source format, reference runner, arch, layout)."""
    if kind == 'mmpretrain':
        model, run = mmpretrain_reference()
        state = {'backbone.' + k: v for k, v in model.state_dict().items()}
        obj = dict(state_dict=state, meta=dict(mmpretrain_version='1.2.0'))
        arch, layout = 'small', 'legacy'
    else:
        model, run = timm_reference(name)
        arch = 'base' if '_b_' in name else 'small'
        layout = 'legacy' if 'legacy' in name else 'official'
        if kind == 'official':
            official = to_official_layout(model)
            # The inverse mapping is exact: timm's own filter maps it back to timm's weights.
            back = checkpoint_filter_fn(dict(official), model)
            ref = model.state_dict()
            assert set(back) == set(ref)
            assert all(torch.equal(back[k], ref[k]) for k in ref)
            obj = dict(state_dict=official, epoch=299)
        else:
            obj = model.state_dict()
    path = tmp_path / f'{kind}_{name}.pth.tar'
    torch.save(obj, path)
    return path, run, arch, layout


CASES = [
    ('timm', 'tnt_s_patch16_224'),
    ('timm', 'tnt_b_patch16_224'),
    ('timm', 'tnt_s_legacy_patch16_224'),
    ('official', 'tnt_s_patch16_224'),
    ('official', 'tnt_b_patch16_224'),
    ('mmpretrain', 'tnt_s'),
]


@pytest.mark.parametrize('kind,name', CASES, ids=[f'{k}-{n}' for k, n in CASES])
def test_equivalence_after_conversion(kind, name, tmp_path):
    src, run_reference, arch, layout = write_source(kind, name, tmp_path)
    dst = tmp_path / 'converted.pth'
    tnt2mm.main([str(src), str(dst)])
    meta = torch.load(dst, weights_only=True)['meta']
    expected_format = 'timm_legacy' if 'legacy' in name else kind
    assert (meta['source_format'], meta['layout']) == (expected_format, layout)

    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    ref_feats, ref_cls, ref_logits = run_reference(x)
    init_cfg = dict(type='Pretrained', checkpoint=str(dst))

    featmap = TNT(arch, layout=layout, out_type='featmap', out_indices=BLOCKS, init_cfg=init_cfg)
    featmap.init_weights()
    classifier = TNT(arch, layout=layout, out_type='cls_token', init_cfg=init_cfg)
    classifier.init_weights()
    with torch.no_grad():
        feats = featmap.eval()(x)
        (cls,) = classifier.eval()(x)
    diffs = [max_abs_diff(a, b) for a, b in zip(feats, ref_feats)]
    print(f'{kind}/{name}: block max abs diff {diffs}, class token {max_abs_diff(cls, ref_cls)}')
    assert max(diffs) <= TOLERANCE
    assert max_abs_diff(cls, ref_cls) <= TOLERANCE
    # The features are not trivially small: a tolerance of 1e-4 means something.
    assert min(f.std().item() for f in ref_feats) > 0.5

    if ref_logits is not None:  # the converted classifier head gives the same logits
        state = torch.load(dst, weights_only=True)['state_dict']
        logits = cls @ state['head.fc.weight'].T + state['head.fc.bias']
        assert max_abs_diff(logits, ref_logits) <= TOLERANCE


def test_official_checkpoint_with_pickled_args_needs_opt_in(tmp_path):
    """Official training checkpoints carry their argparse settings; the safe loader refuses
    them until the user opts in for that file."""
    model, _ = timm_reference('tnt_s_patch16_224')
    src = tmp_path / 'tnt_s_81.5.pth.tar'
    torch.save(dict(state_dict=to_official_layout(model), args=argparse.Namespace(lr=1e-3)), src)
    dst = tmp_path / 'out.pth'
    with pytest.raises(UserError, match='--trust-pickle'):
        tnt2mm.main([str(src), str(dst)])
    assert not dst.exists()
    tnt2mm.main([str(src), str(dst), '--trust-pickle'])
    meta = torch.load(dst, weights_only=True)['meta']
    assert meta['source_format'] == 'official' and meta['layout'] == 'official'
