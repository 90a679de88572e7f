"""Stop training at the first NaN or Inf loss, with a message that says what to do.

mmdet has a hook of this name, but it is mmdet's only (classification and segmentation runs
would have to import mmdet for it), checks every 50 iterations by default, and reports through
a bare ``assert`` (no message in the exception, and none at all under ``python -O``). Checking
every iteration costs nothing here: the logger reads every loss value anyway.
"""
from typing import Optional

import torch
from mmengine.hooks import Hook

from tnt_mm.registry import HOOKS


@HOOKS.register_module()
class CheckInvalidLossHook(Hook):
    """Raise ``FloatingPointError`` when a training loss is NaN or infinite.

    Every config of this package inherits it from ``configs/_base_/tnt_runtime.py``.

    Args:
        interval (int): check every ``interval`` iterations. Defaults to 1.
    """

    def __init__(self, interval: int = 1) -> None:
        self.interval = interval

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        if not outputs or not self.every_n_train_iters(runner, self.interval):
            return
        bad = {name: float(value.detach().sum()) for name, value in outputs.items()
               if 'loss' in name and torch.is_tensor(value) and not torch.isfinite(value).all()}
        if not bad:
            return
        terms = ', '.join(f'{name}={value}' for name, value in bad.items())
        raise FloatingPointError(
            f'non-finite training loss at iteration {runner.iter + 1} (epoch {runner.epoch + 1}): '
            f'{terms}. This step has already changed the weights, so training stops here. '
            f'Resume from the last checkpoint in {runner.work_dir} (--resume) with a lower '
            f'learning rate (optim_wrapper.optimizer.lr), gradient clipping '
            f'(optim_wrapper.clip_grad=dict(max_norm=1.0)), or without --amp; if it recurs at '
            f'the same iteration, check that batch\'s images and annotations.')
