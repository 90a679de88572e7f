from .check_input_hook import CheckInputHook
from .check_invalid_loss_hook import CheckInvalidLossHook
from .safe_checkpoint_hook import SafeCheckpointHook

__all__ = ['CheckInputHook', 'CheckInvalidLossHook', 'SafeCheckpointHook']
