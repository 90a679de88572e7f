from .feature_pool import FeaturePool

__all__ = ['FeaturePool']
