"""Every config gets the shared settings of configs/_base_/ by inheritance: the runtime hooks
exactly once, the official normalisation, and the no-decay parameter groups (the values the
configs had when each wrote them out)."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config

from tnt_mm.utils.config import load_config

HOOKS = ['tnt_mm.SafeCheckpointHook', 'tnt_mm.CheckInvalidLossHook', 'tnt_mm.CheckInputHook',
         'tnt_mm.PlainParamGroupsHook', 'tnt_mm.PreemptionHook']
NO_DECAY = {key: dict(decay_mult=0.0) for key in ('.cls_token', '.patch_pos', '.pixel_pos')}
CLS = dict(norm_decay_mult=0.0, bias_decay_mult=0.0, custom_keys=NO_DECAY)
DENSE = dict(norm_decay_mult=0.0, custom_keys=NO_DECAY)
TRANS2SEG = dict(norm_decay_mult=0.0, custom_keys={
    **NO_DECAY, '.pos_embed': dict(decay_mult=0.0), '.class_embed': dict(decay_mult=0.0)})
DETR = dict(custom_keys={'backbone': dict(lr_mult=0.1, decay_mult=1.0), **NO_DECAY})
# config -> its paramwise_cfg
PARAMWISE = {
    'configs/tnt_s_in1k.py': CLS,
    'configs/tnt_s_in1k_384px.py': CLS,
    'configs/tnt_ti_in1k.py': CLS,
    'configs/tnt_b_in1k.py': CLS,
    'configs/tnt_s_se_in1k.py': CLS,
    'configs/demo/cls_shapes.py': CLS,
    'configs/faster_rcnn_tnt_s_fpn.py': DENSE,
    'configs/faster_rcnn_tnt_s_fpn_ld.py': dict(DENSE, layer_decay_rate=0.7),
    'configs/mask_rcnn_tnt_s_fpn.py': DENSE,
    'configs/demo/mask_shapes.py': DENSE,
    'configs/faster_rcnn_tnt_ti_fpn.py': DENSE,
    'configs/faster_rcnn_tnt_b_fpn.py': DENSE,
    'configs/demo/det_shapes.py': DENSE,
    'configs/demo/det_shapes_chain.py': DENSE,
    'configs/upernet_tnt_s_ade20k.py': DENSE,
    'configs/upernet_tnt_s_ade20k_ld.py': dict(DENSE, layer_decay_rate=0.65),
    'configs/detr_tnt_s.py': DETR,
    'configs/trans2seg_tnt_s_ade20k.py': TRANS2SEG,
    'configs/demo/seg_shapes.py': TRANS2SEG,
    'configs/demo/seg_shapes_upernet.py': TRANS2SEG,
}


def test_every_config_is_listed():
    found = {path for path in glob.glob('configs/**/*.py', recursive=True)
             if '/_base_/' not in path}
    assert found == set(PARAMWISE)


@pytest.mark.parametrize('path', PARAMWISE)
def test_shared_settings(path):
    cfg = Config.fromfile(path)
    types = [hook['type'] for hook in cfg.custom_hooks]
    assert [types.count(name) for name in HOOKS] == [1] * len(HOOKS), types
    # mmpretrain reads the top-level data_preprocessor, mmdet and mmseg the model's
    preprocessor = cfg.model.get('data_preprocessor') or cfg.data_preprocessor
    assert preprocessor.mean == [127.5] * 3 and preprocessor.std == [127.5] * 3
    assert cfg.optim_wrapper.paramwise_cfg.to_dict() == PARAMWISE[path]
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
