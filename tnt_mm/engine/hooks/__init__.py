from .check_input_hook import CheckInputHook
from .check_invalid_loss_hook import CheckInvalidLossHook
from .plain_param_groups_hook import PlainParamGroupsHook
from .preemption_hook import PREEMPTED_EXIT_CODE, PreemptionHook, TrainingPreempted
from .safe_checkpoint_hook import SafeCheckpointHook

__all__ = ['CheckInputHook', 'CheckInvalidLossHook', 'PlainParamGroupsHook', 'PreemptionHook',
           'PREEMPTED_EXIT_CODE', 'SafeCheckpointHook', 'TrainingPreempted']
