"""Checkpoint formats: recognition, refusals, and strict loading through init_cfg."""
import subprocess
import sys

import pytest
import timm
import torch
from helpers import load_tool, randomise_

from tnt_mm.models import TNT
from tnt_mm.models.backbones.tnt_convert import (CheckpointFormatError, convert_state_dict,
                                                 detect_format)
from tnt_mm.utils.cli import UserError

tnt2mm = load_tool('tools/model_converters/tnt2mm.py')


def converted_file(tmp_path, arch='small', name='tnt_s_patch16_224', **kwargs):
    """Write a converted checkpoint of a random timm model; return its path."""
    model = randomise_(timm.create_model(name, **kwargs))
    state, meta = convert_state_dict(model.state_dict())
    path = tmp_path / f'{name}.pth'
    torch.save(dict(state_dict=state, meta=meta), path)
    return path


def test_detect_formats():
    timm_s = timm.create_model('tnt_s_patch16_224').state_dict()
    assert detect_format(timm_s) == 'timm'
    assert detect_format(timm.create_model('tnt_s_legacy_patch16_224').state_dict()) == \
        'timm_legacy'
    state, _ = convert_state_dict(timm_s)
    assert detect_format(state) == 'tnt_mm'
    with pytest.raises(CheckpointFormatError, match='already in the tnt_mm layout'):
        convert_state_dict(state)


def test_refuses_other_networks(tmp_path):
    resnet = tmp_path / 'resnet.pth'
    torch.save(timm.create_model('resnet18').state_dict(), resnet)
    with pytest.raises(UserError, match=r'not a TNT checkpoint .* found 122 tensors'):
        tnt2mm.main([str(resnet), str(tmp_path / 'out.pth')])
    weird = tmp_path / 'weird.pth'
    torch.save([1, 2, 3], weird)
    with pytest.raises(UserError, match='expected a dict of tensors .* found list'):
        tnt2mm.main([str(weird), str(tmp_path / 'out.pth')])
    assert not (tmp_path / 'out.pth').exists()


@pytest.mark.slow
def test_converter_cli_errors_are_one_line(tmp_path):
    good = converted_file(tmp_path)
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(good.read_bytes()[:5000])
    for src in (truncated, tmp_path / 'missing.pth'):
        result = subprocess.run([sys.executable, 'tools/model_converters/tnt2mm.py', str(src),
                                 str(tmp_path / 'out.pth')], capture_output=True, text=True)
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith('error:'), result.stderr
        assert not (tmp_path / 'out.pth').exists()


def test_pyramid_backbone_loads_classification_weights(tmp_path):
    """A classifier checkpoint initialises a detection backbone: the head and the final norm
    are not used there, the pyramid layers are new."""
    path = converted_file(tmp_path)
    model = TNT('small', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    state = torch.load(path, weights_only=True)['state_dict']
    assert torch.equal(model.blocks[11].attn_out.qk.weight,
                       state['backbone.blocks.11.attn_out.qk.weight'])
    assert torch.equal(model.pixel_pos, state['backbone.pixel_pos'])


def test_position_embedding_resampled_on_load(tmp_path):
    path = converted_file(tmp_path)
    model = TNT('small', pretrain_img_size=384,
                init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    assert model.patch_pos.shape == (1, 1 + 24 * 24, 384)
    state = torch.load(path, weights_only=True)['state_dict']
    assert torch.equal(model.patch_pos[:, 0], state['backbone.patch_pos'][:, 0])


def test_full_model_checkpoint_with_prefix(tmp_path):
    """A detector's checkpoint (backbone under 'backbone.') initialises a backbone too."""
    source = randomise_(TNT('tiny', out_type='featmap', out_indices=(1, 3)))
    path = tmp_path / 'detector.pth'
    torch.save(dict(state_dict={**{f'backbone.{k}': v for k, v in source.state_dict().items()},
                                'neck.conv.weight': torch.zeros(1)}), path)
    model = TNT('tiny', out_type='featmap', out_indices=(1, 3),
                init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    for (name, a), b in zip(source.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize('build,message', [
    (lambda: TNT('base'), r'shape mismatches .*backbone|shape mismatches'),
    (lambda: TNT('small', layout='legacy'), "layout 'official' .* build it with layout='official'"),
    (lambda: TNT('small', with_se=True), 'saved with_se=False; build it with with_se=False'),
    (lambda: TNT('small', inner_block_indices=(0, 11)), r'unexpected in the checkpoint'),
])
def test_mismatches_raise_with_a_list(tmp_path, build, message):
    path = converted_file(tmp_path)
    model = build()
    model.init_cfg = dict(type='Pretrained', checkpoint=str(path))
    with pytest.raises((RuntimeError, ValueError), match=message):
        model.init_weights()


def test_missing_keys_are_listed(tmp_path):
    path = converted_file(tmp_path)
    state = torch.load(path, weights_only=True)
    del state['meta']  # a checkpoint without meta is checked key by key
    torch.save(state, path)
    model = TNT('small', with_se=True, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(RuntimeError, match=r'missing from the checkpoint \(72\).*blocks.0.se.fc1'):
        model.init_weights()


def test_registered_in_own_scope_for_all_three_libraries():
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
    from mmseg.registry import MODELS as MMSEG_MODELS
    for registry in (MMDET_MODELS, MMSEG_MODELS, MMPRETRAIN_MODELS):
        model = registry.build(dict(type='tnt_mm.TNT', arch='tiny', out_type='featmap',
                                    out_indices=0))
        assert type(model) is TNT
    # mmpretrain's own (legacy-only) TNT is still its own
    from mmpretrain.models.backbones import TNT as MMPretrainTNT
    assert MMPRETRAIN_MODELS.get('TNT') is MMPretrainTNT
