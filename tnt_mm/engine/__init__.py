from . import checkpoint  # noqa: F401  (registers the safe and the trusted:// checkpoint loaders)
from .hooks import (CheckInputHook, CheckInvalidLossHook, PlainParamGroupsHook,
                    SafeCheckpointHook)
from .optimizers import LayerDecayOptimWrapperConstructor

__all__ = ['CheckInputHook', 'CheckInvalidLossHook', 'LayerDecayOptimWrapperConstructor',
           'PlainParamGroupsHook', 'SafeCheckpointHook']
