from importlib.util import find_spec

from .backbones import TNT  # noqa: F401  (registers the backbone)
from .losses import ClassWeightedCrossEntropyLoss  # noqa: F401  (registers the loss)
from .necks import FeaturePool  # noqa: F401  (registers the neck)

__all__ = ['TNT', 'ClassWeightedCrossEntropyLoss', 'FeaturePool']

# The segmentation head builds on mmsegmentation, which the core install does not require
# (it comes with the 'mim' extra); the backbone must stay importable without it.
if find_spec('mmseg') is not None:
    from .decode_heads import Trans2SegHead  # noqa: F401  (registers the segmentation head)
    __all__.append('Trans2SegHead')
