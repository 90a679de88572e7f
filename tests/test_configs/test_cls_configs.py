"""ImageNet classification configs: the paper's sizes, the official evaluation, timm's logits."""
import pytest
import timm
import torch
from helpers import max_abs_diff, randomise_
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint

from tnt_mm.models.backbones.tnt_convert import convert_state_dict

# config -> (paper params in M, including the official unused outer_tokens of 196 x d)
CONFIGS = {
    'configs/tnt_ti_in1k.py': 6.1,
    'configs/tnt_s_in1k.py': 23.8,
    'configs/tnt_b_in1k.py': 65.6,
    'configs/tnt_s_se_in1k.py': 24.7,
}


def build(path):
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(path)
    init_default_scope(cfg.default_scope)
    return cfg, MODELS.build(cfg.model)


@pytest.mark.parametrize('path,paper_params', CONFIGS.items())
def test_config_builds_with_the_paper_size(path, paper_params):
    cfg, model = build(path)
    params = sum(p.numel() for p in model.parameters())
    outer_tokens = 196 * model.backbone.embed_dims
    assert abs((params + outer_tokens) / 1e6 - paper_params) <= 0.05 + 1e-9
    assert model.backbone.out_type == 'cls_token'


def test_recipe_and_official_evaluation():
    """The values the paper (Table 3) and the official evaluation fix."""
    cfg = Config.fromfile('configs/tnt_s_in1k.py')
    assert cfg.data_preprocessor.mean == [127.5] * 3 and cfg.data_preprocessor.std == [127.5] * 3
    resize, crop = cfg.test_pipeline[1], cfg.test_pipeline[2]
    assert (resize.type, resize.scale, resize.interpolation) == ('ResizeEdge', 248, 'bicubic')
    assert (crop.type, crop.crop_size) == ('CenterCrop', 224)
    assert cfg.optim_wrapper.optimizer.lr == 1e-3 and cfg.train_cfg.max_epochs == 300
    assert cfg.train_dataloader.sampler.type == 'RepeatAugSampler'
    assert [a.type for a in cfg.model.train_cfg.augments] == ['Mixup', 'CutMix']
    assert {'.cls_token', '.patch_pos', '.pixel_pos'} <= set(cfg.optim_wrapper.paramwise_cfg
                                                             .custom_keys)
    assert any(h.type == 'EMAHook' and h.momentum == 4e-5 for h in cfg.custom_hooks)


@pytest.mark.parametrize('path,name', [('configs/tnt_s_in1k.py', 'tnt_s_patch16_224'),
                                       ('configs/tnt_b_in1k.py', 'tnt_b_patch16_224')])
def test_logits_equal_timm(path, name, tmp_path):
    reference = randomise_(timm.create_model(name)).eval()
    state, meta = convert_state_dict(reference.state_dict())
    checkpoint = tmp_path / 'converted.pth'
    torch.save(dict(state_dict=state, meta=meta), checkpoint)
    _, model = build(path)
    load_checkpoint(model, str(checkpoint), strict=True)  # backbone and head, every key
    model.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert max_abs_diff(model(x, mode='tensor'), reference(x)) <= 1e-4


def test_384_fine_tune_starts_from_the_224_classifier(tmp_path):
    """configs/tnt_s_in1k_384px.py: the backbone and the head load from a 224 checkpoint (the
    blocks and the head taken over exactly), the position embedding resampled from 14x14 to
    24x24, and the model classifies 384x384 images."""
    reference = randomise_(timm.create_model('tnt_s_patch16_224')).eval()
    state, meta = convert_state_dict(reference.state_dict())
    checkpoint = tmp_path / 'tnt_s_224.pth'
    torch.save(dict(state_dict=state, meta=meta), checkpoint)
    cfg = Config.fromfile('configs/tnt_s_in1k_384px.py')
    cfg.model.backbone.init_cfg.checkpoint = str(checkpoint)
    cfg.model.head.init_cfg.checkpoint = str(checkpoint)
    init_default_scope(cfg.default_scope)
    from mmpretrain.registry import MODELS
    model = MODELS.build(cfg.model)
    model.init_weights()
    assert model.backbone.patch_pos.shape == (1, 1 + 24 * 24, 384)
    assert torch.equal(model.head.fc.weight, state['head.fc.weight'])
    assert torch.equal(model.backbone.blocks[11].mlp.fc2.weight,
                       state['backbone.blocks.11.mlp.fc2.weight'])
    model.eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 384, 384), mode='tensor')
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()
    assert cfg.test_pipeline[2].crop_size == 384 and cfg.train_cfg.max_epochs == 30
