from .backbones import TNT  # noqa: F401  (registers the backbone)
from .necks import FeaturePool  # noqa: F401  (registers the neck)

__all__ = ['TNT', 'FeaturePool']
