"""Distributed training without a GPU (torchrun on CPU, gloo backend).

mmengine 0.10.7 cannot do this on its own: its ``init_dist`` always calls
``torch.cuda.set_device``, and its default DDP wrapper passes ``device_ids=[LOCAL_RANK]``, which
DDP rejects for CPU modules. With a GPU the normal mmengine path applies and this does nothing.
"""
import torch
import torch.distributed as dist
from mmengine.config import Config


def prepare_cpu_distributed(cfg: Config) -> bool:
    """For a ``pytorch`` launch on a machine without CUDA, start the gloo process group (the
    Runner then skips its own ``init_dist``) and wrap the model without ``device_ids``.

    Returns:
        bool: whether the CPU path was taken.
    """
    if cfg.get('launcher', 'none') != 'pytorch' or torch.cuda.is_available():
        return False
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')  # reads RANK / WORLD_SIZE / MASTER_* (torchrun)
    cfg.env_cfg = cfg.get('env_cfg') or {}
    cfg.env_cfg['dist_cfg'] = dict(backend='gloo')
    wrapper = dict(cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel'))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    return True


def build_runner(cfg: Config):
    """Build the mmengine Runner for ``cfg``, taking the CPU distributed path when needed."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    prepare_cpu_distributed(cfg)
    return Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)


def close_distributed() -> None:
    """Leave the process group once training is over. mmengine never does; a gloo group left to
    the interpreter's exit sometimes aborted a rank ("terminate called without an active
    exception", SIGABRT) after a complete run, so the launcher reported a failure."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
