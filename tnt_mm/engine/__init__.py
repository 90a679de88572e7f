from . import checkpoint  # noqa: F401  (registers the safe and the trusted:// checkpoint loaders)
from .hooks import (PREEMPTED_EXIT_CODE, CheckInputHook, CheckInvalidLossHook,
                    PlainParamGroupsHook, PreemptionHook, SafeCheckpointHook, TrainingPreempted)
from .optimizers import LayerDecayOptimWrapperConstructor

__all__ = ['CheckInputHook', 'CheckInvalidLossHook', 'LayerDecayOptimWrapperConstructor',
           'PlainParamGroupsHook', 'PREEMPTED_EXIT_CODE', 'PreemptionHook', 'SafeCheckpointHook',
           'TrainingPreempted']
