"""The registries of tnt_mm.

The package keeps its own scope so that configs of mmdet, mmseg and mmpretrain all say
``type='tnt_mm.TNT'`` without clashing with mmpretrain's own (legacy-only) ``TNT``. mmengine
imports ``tnt_mm.registry`` by itself when it meets the ``tnt_mm.`` prefix, and
``locations`` then imports the modules that register into it.
"""
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='tnt_mm', locations=['tnt_mm.models'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='tnt_mm', locations=['tnt_mm.engine'])
OPTIM_WRAPPER_CONSTRUCTORS = Registry('optimizer wrapper constructor',
                                      parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS, scope='tnt_mm',
                                      locations=['tnt_mm.engine'])
# mmseg-based metrics; imported only when a config names one (``import tnt_mm`` needs no mmseg)
METRICS = Registry('metric', parent=MMENGINE_METRICS, scope='tnt_mm',
                   locations=['tnt_mm.evaluation'])
