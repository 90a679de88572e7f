# What every tnt_mm config runs with: the package's modules, and the hooks that write
# checkpoints loadable with weights_only=True, stop on a NaN/Inf loss or a wrong input, and let
# compile=True compile a training step with per-parameter optimizer settings.
# A config with hooks of its own keeps these: custom_hooks = _base_.custom_hooks + [...].
custom_imports = dict(imports=['tnt_mm'], allow_failed_imports=False)
custom_hooks = [
    dict(type='tnt_mm.SafeCheckpointHook'),
    dict(type='tnt_mm.CheckInvalidLossHook'),
    dict(type='tnt_mm.CheckInputHook'),
    dict(type='tnt_mm.PlainParamGroupsHook'),
]
