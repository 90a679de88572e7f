"""TNT (Transformer in Transformer) backbones for the OpenMMLab 2.x stack.

``import tnt_mm`` registers the models in the ``tnt_mm`` registry scope; configs refer to them
as ``type='tnt_mm.TNT'``. It also lets mmcv's ``nms`` and ``roi_align`` run on torchvision's
kernels where mmcv has none for the device (:mod:`tnt_mm.detection_ops`).
"""
from . import detection_ops, engine, models  # noqa: F401  (registers hooks and models)
from .version import __version__

# nms and roi_align by torchvision's kernels where mmcv has none (a CPU-only mmcv on a GPU)
detection_ops.install()

__all__ = ['__version__']
