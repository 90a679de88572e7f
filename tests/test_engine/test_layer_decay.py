"""Layer-wise learning-rate decay: TNT.get_layer_depth in mmpretrain's convention, mmpretrain's
constructor on our classifier, ours on a detector and a segmentor (backbone by depth, neck and
heads at the base lr, the no-decay rules kept), and a training step of the _ld configs."""
import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope

from tnt_mm.engine import LayerDecayOptimWrapperConstructor
from tnt_mm.models import TNT


def build(path, scope, neck=None, **backbone):
    from mmengine.registry import MODELS
    cfg = Config.fromfile(path)
    cfg.model.backbone.init_cfg = None  # no checkpoint in tests
    cfg.model.backbone.update(backbone)
    if neck:
        cfg.model.neck.update(neck)
    if 'head' in cfg.model and 'init_cfg' in cfg.model.head:
        cfg.model.head.init_cfg = None
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(cfg.model)
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    return cfg, model, wrapper


def groups_by_name(model, wrapper):
    """Parameter name -> its optimizer group."""
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g for g in wrapper.optimizer.param_groups for p in g['params']}


def expected_scale(name, rate, depth=12):
    """ViTDet's and BEiT's rule for a 12-block backbone under ``backbone.``."""
    if not name.startswith('backbone.') or name.startswith(('backbone.pyramid.',
                                                            'backbone.norm.')):
        return 1.0
    if name.startswith('backbone.blocks.'):
        return rate ** (depth - int(name.split('.')[2]))
    return rate ** (depth + 1)  # the embeddings


def test_layer_depth_convention():
    model = TNT('small')
    assert model.get_layer_depth('cls_token') == (0, 14)
    for embedding in ('patch_pos', 'pixel_pos', 'pixel_embed.proj.weight', 'norm1_proj.bias',
                      'proj.weight', 'norm2_proj.weight'):
        assert model.get_layer_depth('backbone.' + embedding, 'backbone.') == (0, 14)
    assert model.get_layer_depth('backbone.blocks.0.attn_in.qk.weight', 'backbone.') == (1, 14)
    assert model.get_layer_depth('backbone.blocks.11.mlp.fc2.bias', 'backbone.') == (12, 14)
    assert model.get_layer_depth('backbone.pyramid.levels.0.0.weight', 'backbone.') == (13, 14)
    assert model.get_layer_depth('neck.fpn_convs.0.conv.weight', 'backbone.') == (13, 14)
    # the depth of the architecture, also where fewer blocks are built
    assert TNT('small', out_indices=(2,), out_type='featmap').get_layer_depth('cls_token') == \
        (0, 14)


def test_mmpretrain_constructor_accepts_our_classifier():
    """mmpretrain's LearningRateDecayOptimWrapperConstructor, unchanged, on the ImageNet config:
    the embeddings at 0.75 ** 13, block i at 0.75 ** (12 - i), the head at 1."""
    cfg = Config.fromfile('configs/tnt_s_in1k.py')
    cfg.optim_wrapper.constructor = 'LearningRateDecayOptimWrapperConstructor'
    cfg.optim_wrapper.paramwise_cfg = dict(layer_decay_rate=0.75)
    from mmengine.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        import mmpretrain.engine  # noqa: F401  (registers the constructor)
        model = MODELS.build(cfg.model)
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    base = cfg.optim_wrapper.optimizer.lr
    groups = groups_by_name(model, wrapper)
    assert len(groups) == sum(1 for _ in model.parameters())
    for name, group in groups.items():
        assert group['lr'] == pytest.approx(base * expected_scale(name, 0.75)), name


@pytest.mark.parametrize('path, scope, rate', [
    ('configs/faster_rcnn_tnt_s_fpn_ld.py', 'mmdet', 0.7),
    ('configs/upernet_tnt_s_ade20k_ld.py', 'mmseg', 0.65),
])
def test_our_constructor_on_dense_models(path, scope, rate):
    cfg, model, wrapper = build(path, scope)
    base_lr, base_wd = cfg.optim_wrapper.optimizer.lr, cfg.optim_wrapper.optimizer.weight_decay
    groups = groups_by_name(model, wrapper)
    assert len(groups) == sum(1 for _ in model.parameters())
    for name, group in groups.items():
        assert group['lr'] == pytest.approx(base_lr * expected_scale(name, rate)), name
    # merged: one group per setting (layer, weight decay, custom key), not one per parameter
    settings = {tuple((k, v) for k, v in g.items() if k != 'params') for g in groups.values()}
    assert len(wrapper.optimizer.param_groups) == len(settings) < 40
    # the no-decay rules hold beside the decay
    for name in ('backbone.cls_token', 'backbone.patch_pos', 'backbone.pixel_pos',
                 'backbone.blocks.3.norm_in.weight', 'backbone.norm1_proj.bias'):
        assert groups[name]['weight_decay'] == 0.0, name
    assert groups['backbone.blocks.3.attn_in.qk.weight'].get('weight_decay', base_wd) == base_wd
    # the first block learns 0.7 ** 12 = 1.4% as fast as the heads (ViTDet)
    first = groups['backbone.blocks.0.attn_in.qk.weight']['lr']
    assert first / base_lr == pytest.approx(rate ** 12)


def test_decayed_fine_tuning_trains_a_step():
    """The detection _ld config (backbone shrunk to TNT-Ti for time): one AdamW step through
    the optimizer wrapper changes the first block by less than the heads, as the lrs say."""
    from mmdet.testing import demo_mm_inputs
    _, model, wrapper = build('configs/faster_rcnn_tnt_s_fpn_ld.py', 'mmdet', arch='tiny',
                              neck=dict(in_channels=[192] * 4))
    torch.manual_seed(0)
    packed = demo_mm_inputs(batch_size=2, image_shapes=[(3, 160, 224), (3, 128, 192)],
                            num_items=[3, 2], num_classes=80)
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    data = model.data_preprocessor(packed, True)
    loss, _ = model.parse_losses(model(**data, mode='loss'))
    wrapper.update_params(loss)
    assert torch.isfinite(loss)
    step = {n: (p.detach() - before[n]).abs().max().item() for n, p in model.named_parameters()}
    # AdamW's first step moves each weight by about its lr: the ratio of the lrs shows
    first = step['backbone.blocks.0.mlp.fc1.weight']
    head = step['rpn_head.rpn_conv.weight']
    assert 0 < first < head * 0.7 ** 10


def test_bad_settings_say_what_is_wrong():
    with pytest.raises(ValueError, match=r'layer_decay_rate=1.5 must be in \(0, 1\]'):
        LayerDecayOptimWrapperConstructor(
            dict(optimizer=dict(type='AdamW', lr=1e-4)), dict(layer_decay_rate=1.5))
    constructor = LayerDecayOptimWrapperConstructor(
        dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-4)),
        dict(layer_decay_rate=0.7))
    with pytest.raises(TypeError, match='neither Linear nor its backbone'):
        constructor(torch.nn.Linear(2, 2))


def test_the_rate_alone_is_enough():
    """layer_decay_rate as the only paramwise option still decays (mmengine skips add_params
    for an empty paramwise_cfg)."""
    model = torch.nn.Module()
    model.backbone = TNT(dict(inner_dim=12, inner_heads=2, outer_dim=96, outer_heads=2, depth=4),
                         out_type='featmap')
    constructor = LayerDecayOptimWrapperConstructor(
        dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1.0)),
        dict(layer_decay_rate=0.5))
    groups = groups_by_name(model, constructor(model))
    assert groups['backbone.blocks.3.proj.weight']['lr'] == 0.5
    assert groups['backbone.cls_token']['lr'] == 0.5 ** 5
