from . import checkpoint  # noqa: F401  (registers the safe and the trusted:// checkpoint loaders)
from .hooks import (CheckInputHook, CheckInvalidLossHook, PlainParamGroupsHook,
                    SafeCheckpointHook)

__all__ = ['CheckInputHook', 'CheckInvalidLossHook', 'PlainParamGroupsHook', 'SafeCheckpointHook']
