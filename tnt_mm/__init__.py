"""TNT (Transformer in Transformer) backbones for the OpenMMLab 2.x stack.

``import tnt_mm`` registers the models in the ``tnt_mm`` registry scope; configs refer to them
as ``type='tnt_mm.TNT'``.
"""
from . import engine, models  # noqa: F401  (registers hooks and models)
from .version import __version__

__all__ = ['__version__']
