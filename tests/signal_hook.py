"""A test-only hook that sends real signals to its own process at known points of training, so
that a preemption test stops at a known iteration, on one rank only, or during the save.

Used by tests/test_tools/test_preemption.py through a config that adds
``custom_imports=['signal_hook']`` with ``tests/`` on ``PYTHONPATH``."""
import os
import signal
import time

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class SignalAtIterHook(Hook):
    """After iteration ``at_iter`` (1-based) on rank ``rank``, send ``signal_name`` to this
    process and write the time to ``stamp_file``; then, during the checkpoint save that follows,
    send each of ``during_save`` (e.g. ``['SIGTERM']``, or ``['SIGKILL']`` to die mid-save)."""
    priority = 'HIGHEST'  # before PreemptionHook looks, as a signal arriving mid-iteration

    def __init__(self, at_iter: int, signal_name: str = 'SIGTERM', rank: int = 0,
                 stamp_file: str = '', during_save=()) -> None:
        self.at_iter, self.signum = at_iter, getattr(signal, signal_name)
        self.rank, self.stamp_file = rank, stamp_file
        self.during_save = [getattr(signal, name) for name in during_save]
        self.sent = False

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 != self.at_iter or runner.rank != self.rank:
            return
        if self.stamp_file:
            with open(self.stamp_file, 'w') as f:
                f.write(repr(time.time()))
        self.sent = True
        os.kill(os.getpid(), self.signum)

    def before_save_checkpoint(self, runner, checkpoint) -> None:
        if self.sent:
            for signum in self.during_save:
                os.kill(os.getpid(), signum)
