# What every tnt_mm config runs with: the package's modules, and the hooks that write
# checkpoints loadable with weights_only=True, stop on a NaN/Inf loss or a wrong input, let
# compile=True compile a training step with per-parameter optimizer settings, and save and stop
# on SIGTERM/SIGUSR1 (cluster preemption) with an exact mid-epoch resume.
# A config with hooks of its own keeps these: custom_hooks = _base_.custom_hooks + [...].
custom_imports = dict(imports=['tnt_mm'], allow_failed_imports=False)
custom_hooks = [
    dict(type='tnt_mm.SafeCheckpointHook'),
    dict(type='tnt_mm.CheckInvalidLossHook'),
    dict(type='tnt_mm.CheckInputHook'),
    dict(type='tnt_mm.PlainParamGroupsHook'),
    # interval_minutes=N also saves every N minutes (tools/train.py --save-every-minutes N)
    dict(type='tnt_mm.PreemptionHook'),
]
