"""TNT (Transformer in Transformer) backbones for the OpenMMLab 2.x stack.

``import tnt_mm`` registers what the package adds: its models and hooks in the ``tnt_mm``
registry scope (configs refer to them as ``type='tnt_mm.TNT'``) and the ``trusted://`` and
``hf-hub:`` checkpoint prefixes. It changes no other library's behaviour, with one documented
exception: mmcv's ``nms`` and ``roi_align`` run on torchvision's kernels where mmcv has none
for the device (:mod:`tnt_mm.detection_ops`), and only there.
"""
from . import detection_ops, engine, models  # noqa: F401  (registers hooks and models)
from .version import __version__

# nms and roi_align by torchvision's kernels where mmcv has none (a CPU-only mmcv on a GPU)
detection_ops.install()

__all__ = ['__version__']
