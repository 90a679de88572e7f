"""Every config gets the shared settings of configs/_base_/ by inheritance: the runtime hooks
exactly once, the official normalisation, and the no-decay parameter groups, checked on the
optimizer built for one config of each family."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config

from tnt_mm.utils.config import load_config

HOOKS = ['tnt_mm.SafeCheckpointHook', 'tnt_mm.CheckInvalidLossHook', 'tnt_mm.CheckInputHook',
         'tnt_mm.PlainParamGroupsHook', 'tnt_mm.PreemptionHook']
# config -> the config of its family whose built optimizer test_param_groups checks; a family
# shares one paramwise_cfg (layer decay adds its rate)
FAMILY = {
    'configs/tnt_s_in1k.py': 'configs/demo/cls_shapes.py',
    'configs/tnt_s_in1k_384px.py': 'configs/demo/cls_shapes.py',
    'configs/tnt_ti_in1k.py': 'configs/demo/cls_shapes.py',
    'configs/tnt_b_in1k.py': 'configs/demo/cls_shapes.py',
    'configs/tnt_s_se_in1k.py': 'configs/demo/cls_shapes.py',
    'configs/demo/cls_shapes.py': 'configs/demo/cls_shapes.py',
    'configs/faster_rcnn_tnt_s_fpn.py': 'configs/demo/det_shapes.py',
    'configs/faster_rcnn_tnt_s_fpn_ld.py': 'configs/demo/det_shapes.py',
    'configs/mask_rcnn_tnt_s_fpn.py': 'configs/demo/det_shapes.py',
    'configs/demo/mask_shapes.py': 'configs/demo/det_shapes.py',
    'configs/faster_rcnn_tnt_ti_fpn.py': 'configs/demo/det_shapes.py',
    'configs/faster_rcnn_tnt_b_fpn.py': 'configs/demo/det_shapes.py',
    'configs/demo/det_shapes.py': 'configs/demo/det_shapes.py',
    'configs/demo/det_shapes_chain.py': 'configs/demo/det_shapes.py',
    'configs/upernet_tnt_s_ade20k.py': 'configs/demo/det_shapes.py',
    'configs/upernet_tnt_s_ade20k_ld.py': 'configs/demo/det_shapes.py',
    'configs/detr_tnt_s.py': 'configs/detr_tnt_s.py',
    'configs/trans2seg_tnt_s_ade20k.py': 'configs/demo/seg_shapes.py',
    'configs/demo/seg_shapes.py': 'configs/demo/seg_shapes.py',
    'configs/demo/seg_shapes_upernet.py': 'configs/demo/seg_shapes.py',
}
NO_DECAY_NAMES = ('cls_token', 'patch_pos', 'pixel_pos', 'pos_embed', 'class_embed')


def test_every_config_is_listed():
    found = {path for path in glob.glob('configs/**/*.py', recursive=True)
             if '/_base_/' not in path}
    assert found == set(FAMILY)


@pytest.mark.parametrize('path', FAMILY)
def test_shared_settings(path):
    cfg = Config.fromfile(path)
    types = [hook['type'] for hook in cfg.custom_hooks]
    assert [types.count(name) for name in HOOKS] == [1] * len(HOOKS), types
    # mmpretrain reads the top-level data_preprocessor, mmdet and mmseg the model's
    preprocessor = cfg.model.get('data_preprocessor') or cfg.data_preprocessor
    assert preprocessor.mean == [127.5] * 3 and preprocessor.std == [127.5] * 3
    paramwise = cfg.optim_wrapper.paramwise_cfg.to_dict()
    family = Config.fromfile(FAMILY[path]).optim_wrapper.paramwise_cfg.to_dict()
    assert {k: v for k, v in paramwise.items() if k != 'layer_decay_rate'} == family
    # one optimizer group per setting (mmengine's constructor makes one per parameter)
    assert cfg.optim_wrapper.constructor == ('tnt_mm.LayerDecayOptimWrapperConstructor'
                                             if 'layer_decay_rate' in paramwise else
                                             'tnt_mm.MergedGroupsOptimWrapperConstructor')
    if path.startswith('configs/demo/'):
        assert cfg.randomness.seed == 0
        assert cfg.model.backbone.arch == dict(inner_dim=12, inner_heads=2, outer_dim=192,
                                               outer_heads=3, depth=6)


def test_hooks_come_from_the_config_only(tmp_path):
    """A config written from ours keeps the hooks; one that drops them is not patched."""
    base = osp.abspath('configs/demo/cls_shapes.py')
    kept = tmp_path / 'kept.py'
    kept.write_text(f"_base_ = '{base}'\n"
                    "custom_hooks = _base_.custom_hooks + [dict(type='EMAHook')]\n")
    assert [h['type'] for h in load_config(str(kept)).custom_hooks] == HOOKS + ['EMAHook']
    dropped = tmp_path / 'dropped.py'
    dropped.write_text(f"_base_ = '{base}'\ncustom_hooks = [dict(type='EMAHook')]\n")
    assert [h['type'] for h in load_config(str(dropped)).custom_hooks] == ['EMAHook']


def built_optimizer(path):
    """The model of ``path`` and the optimizer its ``optim_wrapper`` builds for it."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import MODELS, init_default_scope
    cfg = Config.fromfile(path)
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    return cfg, model, build_optim_wrapper(model, cfg.optim_wrapper).optimizer


@pytest.mark.parametrize('path', sorted(set(FAMILY.values())))
def test_param_groups(path):
    """No weight decay on the position embeddings, the class token, every norm (but in DETR's
    recipe) and in the classification recipe every bias; DETR trains its whole backbone, class
    token and position embeddings included, at a tenth of the lr; the rest at the recipe's lr
    and decay."""
    import torch.nn as nn
    cfg, model, optimizer = built_optimizer(path)
    base_lr, base_decay = optimizer.defaults['lr'], optimizer.defaults['weight_decay']
    assert base_decay > 0
    norms = {id(p) for m in model.modules()
             if isinstance(m, (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm))
             for p in m.parameters(recurse=False)}
    groups = {id(p): g for g in optimizer.param_groups for p in g['params']}
    checked = 0
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        group = groups[id(param)]
        detr = path.endswith('detr_tnt_s.py')  # mmdet's DETR recipe decays the norms
        no_decay = ((id(param) in norms and not detr) or name.split('.')[-1] in NO_DECAY_NAMES
                    or (path.endswith('cls_shapes.py') and name.endswith('.bias')))
        assert group['weight_decay'] == (0.0 if no_decay else base_decay), name
        lr_mult = 0.1 if detr and name.startswith('backbone.') else 1
        assert group['lr'] == pytest.approx(base_lr * lr_mult), name
        checked += 1
    assert checked == len(groups)
    settings = {tuple((k, v) for k, v in g.items() if k != 'params')
                for g in optimizer.param_groups}
    assert len(optimizer.param_groups) == len(settings) <= 6

