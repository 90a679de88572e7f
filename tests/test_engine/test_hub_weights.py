"""Weights by Hugging Face Hub name (``hf-hub:ORG/REPO``), offline: a hub cache this test writes
itself holds TNT checkpoints made from timm's own randomly initialised models, one in the
official layout (safetensors, as timm publishes) and one in the legacy layout (a PyTorch file);
each loads by name exactly as the same file converted by path does."""
import hashlib
import os.path as osp

import pytest
import timm
import torch
from helpers import load_tool
from safetensors.torch import save_file

from tnt_mm.engine.checkpoint import load_checkpoint_safely, parse_hub_name
from tnt_mm.models import TNT
from tnt_mm.models.backbones.tnt_convert import CheckpointFormatError
from tnt_mm.utils.cli import UserError

converter = load_tool('tools/model_converters/tnt2mm.py')


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An offline hub cache in ``tmp_path``; ``publish(repo, filename, state)`` puts a file in
    it as ``huggingface_hub`` would have downloaded it (``refs/main`` -> a snapshot)."""
    import huggingface_hub.constants as constants
    cache = tmp_path / 'hub'
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(cache))
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)

    def publish(repo: str, filename: str, state: dict) -> str:
        commit = hashlib.sha1(repo.encode()).hexdigest()
        folder = cache / f'models--{repo.replace("/", "--")}'
        (folder / 'refs').mkdir(parents=True, exist_ok=True)
        (folder / 'refs' / 'main').write_text(commit)
        snapshot = folder / 'snapshots' / commit
        snapshot.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in state.items()}
        (snapshot / filename).parent.mkdir(parents=True, exist_ok=True)
        if filename.endswith('.safetensors'):
            save_file(state, str(snapshot / filename))
        else:
            torch.save(state, snapshot / filename)
        return str(snapshot / filename)
    return publish


@pytest.mark.parametrize('timm_name, filename, layout', [
    ('tnt_s_patch16_224', 'model.safetensors', 'official'),
    ('tnt_s_legacy_patch16_224', 'pytorch_model.bin', 'legacy'),
])
def test_weights_by_hub_name_equal_the_file_converted_by_path(hub, tmp_path, timm_name, filename,
                                                              layout):
    torch.manual_seed(0)
    state = timm.create_model(timm_name).state_dict()
    path = hub(f'timm/{timm_name}.in1k', filename, state)
    by_name = TNT('small', layout=layout, out_type='cls_token', init_cfg=dict(
        type='Pretrained', checkpoint=f'hf-hub:timm/{timm_name}.in1k'))
    by_name.init_weights()
    converted = str(tmp_path / 'converted.pth')  # the converter, by name too
    converter.main([f'hf-hub:timm/{timm_name}.in1k', converted])
    by_path = TNT('small', layout=layout, out_type='cls_token',
                  init_cfg=dict(type='Pretrained', checkpoint=converted))
    by_path.init_weights()
    raw = TNT('small', layout=layout, out_type='cls_token',
              init_cfg=dict(type='Pretrained', checkpoint=path))  # the hub's file by its path
    raw.init_weights()
    names = list(by_path.state_dict())
    assert names and names == list(by_name.state_dict()) == list(raw.state_dict())
    for name in names:
        assert torch.equal(by_name.state_dict()[name], by_path.state_dict()[name]), name
        assert torch.equal(raw.state_dict()[name], by_path.state_dict()[name]), name
    # and the weights are timm's, not the initialisation
    assert torch.equal(by_name.patch_pos, state['patch_pos'])


def test_a_hub_file_and_revision_can_be_named(hub):
    torch.manual_seed(1)
    state = timm.create_model('tnt_s_patch16_224').state_dict()
    hub('someone/tnt', 'weights/ema.safetensors', state)
    loaded = load_checkpoint_safely('hf-hub:someone/tnt/weights/ema.safetensors')
    assert torch.equal(loaded['patch_pos'], state['patch_pos'])
    assert parse_hub_name('hf-hub:org/repo@v1.0/a/b.bin') == ('org/repo', 'v1.0', 'a/b.bin')
    for bad in ('hf-hub:repo', 'hf-hub:org/', 'hf-hub:/repo'):
        with pytest.raises(ValueError, match='is not a hub name: expected hf-hub:ORG/REPO'):
            parse_hub_name(bad)


def test_not_a_tnt_checkpoint_names_what_it_found(hub):
    hub('timm/deit_small_patch16_224.fb_in1k', 'model.safetensors',
        timm.create_model('deit_small_patch16_224').state_dict())
    model = TNT('small', out_type='cls_token', init_cfg=dict(
        type='Pretrained', checkpoint='hf-hub:timm/deit_small_patch16_224.fb_in1k'))
    with pytest.raises(CheckpointFormatError, match=r'hf-hub:timm/deit_small_patch16_224.fb_in1k: '
                                                    r'not a TNT checkpoint this package knows: '
                                                    r'found 152 tensors, e.g. \[.blocks.0.attn'):
        model.init_weights()


def test_missing_offline_names_the_cache(hub, tmp_path):
    with pytest.raises(FileNotFoundError, match=r'timm/nothing_here has none of '
                                                r'model.safetensors \(not in the local hub '
                                                r'cache.*HF_HUB_OFFLINE'):
        load_checkpoint_safely('hf-hub:timm/nothing_here')
    with pytest.raises(UserError, match='timm/nothing_here has none of'):
        converter.main(['hf-hub:timm/nothing_here', osp.join(str(tmp_path), 'never.pth')])


def test_the_tools_check_accepts_hub_names():
    """tools/train.py checks before building that the checkpoints exist; a hub name is not a
    path, and a missing file still names the hub as one way out."""
    from mmengine.config import Config

    from tnt_mm.utils.config import check_checkpoints

    def config(checkpoint):
        return Config(dict(model=dict(backbone=dict(
            init_cfg=dict(type='Pretrained', checkpoint=checkpoint)))))
    check_checkpoints(config('hf-hub:timm/tnt_s_patch16_224.in1k'))
    with pytest.raises(UserError, match=r'does not exist. Name the weights on the Hugging Face '
                                        r'Hub \(hf-hub:timm/tnt_s_patch16_224.in1k\)'):
        check_checkpoints(config('checkpoints/missing.pth'))
