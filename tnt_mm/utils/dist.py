"""Distributed training without a GPU (torchrun on CPU, gloo backend).

mmengine 0.10.7 cannot do this on its own: its ``init_dist`` always calls
``torch.cuda.set_device``, and its default DDP wrapper passes ``device_ids=[LOCAL_RANK]``, which
DDP rejects for CPU modules. With a GPU the normal mmengine path applies and this does nothing.
"""
import logging
import os
import sys

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


def exit_distributed(exit_code: int = 0) -> None:
    """End a distributed run's process once its work is done: every rank leaves the process
    group, flushes its logs and output, and exits with ``exit_code`` without the interpreter's
    finalization. Does nothing (and returns) outside a distributed run.

    Why not a normal exit: DDP's C++ reducer keeps the gloo group alive after
    ``destroy_process_group`` (a weak reference to it survives ``del model``), so the group's
    worker threads were torn down during finalization, and a rank sometimes aborted there
    ("terminate called without an active exception", SIGABRT) after a complete run, which
    torchrun reported as a failure."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    dist.barrier()
    dist.destroy_process_group()
    logging.shutdown()  # mmengine's log files
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)
