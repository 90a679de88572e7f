from .backbones import TNT  # noqa: F401  (registers the backbone)

__all__ = ['TNT']
