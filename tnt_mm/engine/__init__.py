from . import checkpoint  # noqa: F401  (adds the trusted:// and hf-hub: checkpoint prefixes)
from .hooks import (PREEMPTED_EXIT_CODE, CheckInputHook, CheckInvalidLossHook,
                    PlainParamGroupsHook, PreemptionHook, SafeCheckpointHook, TrainingPreempted)
from .optimizers import LayerDecayOptimWrapperConstructor, MergedGroupsOptimWrapperConstructor

__all__ = ['CheckInputHook', 'CheckInvalidLossHook', 'LayerDecayOptimWrapperConstructor',
           'MergedGroupsOptimWrapperConstructor', 'PlainParamGroupsHook', 'PREEMPTED_EXIT_CODE',
           'PreemptionHook', 'SafeCheckpointHook', 'TrainingPreempted']
