from .check_input_hook import CheckInputHook
from .check_invalid_loss_hook import CheckInvalidLossHook
from .plain_param_groups_hook import PlainParamGroupsHook
from .safe_checkpoint_hook import SafeCheckpointHook

__all__ = ['CheckInputHook', 'CheckInvalidLossHook', 'PlainParamGroupsHook', 'SafeCheckpointHook']
