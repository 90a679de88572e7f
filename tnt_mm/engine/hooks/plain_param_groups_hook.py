"""Let mmengine's ``compile=True`` compile a training step whose optimizer has per-parameter
settings.

mmengine compiles the model's whole ``train_step``, the optimizer step included. Its optimizer
constructor stores the parameter groups in the optimizer config, a ``ConfigDict``, so every group
comes out a ``ConfigDict`` whenever ``paramwise_cfg`` is used (every tnt_mm config: no weight
decay on norms, biases and position embeddings). Dynamo's optimizer support takes plain dicts
only and stops inside ``Adam.step`` with ``InternalTorchDynamoError: 'UserDefinedDictVariable'
object has no attribute 'items'`` (torch 2.14, mmengine 0.10.7).
"""
from mmengine.hooks import Hook
from mmengine.optim import OptimWrapperDict

from tnt_mm.registry import HOOKS


@HOOKS.register_module()
class PlainParamGroupsHook(Hook):
    """Before a training run that is compiled (``compile`` set in the config), turn the
    optimizer's parameter groups into plain dicts, same keys and values. Nothing changes
    otherwise. Every config of this package inherits it from ``configs/_base_/tnt_runtime.py``.
    """

    def before_run(self, runner) -> None:
        if not runner.cfg.get('compile') or not hasattr(runner, 'optim_wrapper'):
            return
        wrappers = runner.optim_wrapper
        if not isinstance(wrappers, OptimWrapperDict):
            wrappers = {'': wrappers}
        for wrapper in wrappers.values():
            optimizer = getattr(wrapper, 'optimizer', None)
            if optimizer is not None:
                optimizer.param_groups[:] = [dict(g) for g in optimizer.param_groups]
