"""Survive cluster preemption: save at the iteration a stop signal arrives, resume mid-epoch.

Clusters stop jobs with a signal and kill them after a grace period (slurm: SIGTERM on
preemption, or the signal of ``--signal`` before the time limit; torchrun forwards both to its
workers). mmengine writes checkpoints at epoch ends only and ignores the signal, so a preempted
COCO run loses up to an epoch, and a mid-epoch checkpoint would not resume exactly: mmengine's
epoch loop starts a resumed epoch from its first batch again.

:class:`PreemptionHook` fixes both:

- **On SIGTERM / SIGUSR1** the handler only records the signal. After the current training
  iteration every rank learns whether any rank got one (an all-reduce of two flags), all save
  one checkpoint at that iteration (rank 0 writes it under a temporary name and renames it, then
  points ``last_checkpoint`` at it), and :class:`TrainingPreempted` stops the run; ``tools/
  train.py`` turns it into exit status :data:`PREEMPTED_EXIT_CODE` and says how to resume. A
  second signal during the save is ignored, and a kill during it leaves the previous
  checkpoint, and ``last_checkpoint``, untouched.
- **Mid-epoch resume.** When a run resumes inside an epoch, the rest of that epoch is read
  through a copy of the data loader whose batch sampler skips the batches already trained on
  (indices only: no image is loaded), so the remaining batches are the same samples in the
  same order. The copy uses a private generator for its base seed, so the global generators
  (restored by :class:`SafeCheckpointHook`) continue exactly where the stopped run left them.
  Iteration-based loops advance their data loader themselves (mmengine).
- **Time-based checkpoints** (``interval_minutes``): also save every N minutes (rank 0's clock
  decides for all), keeping only the latest such file, for clusters that kill without warning.

It is in every config through ``configs/_base_/tnt_runtime.py``.
"""
import os
import os.path as osp
import signal
import threading
import time
from typing import Dict, Optional

import torch
from mmengine.dist import all_reduce, barrier, is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop
from torch.utils.data import DataLoader

from tnt_mm.registry import HOOKS

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: a temporary failure, run it again
DEFAULT_SIGNALS = ('SIGTERM', 'SIGUSR1')


class TrainingPreempted(Exception):
    """Training stopped on a signal after saving a checkpoint to resume from."""

    def __init__(self, signal_name: str, iteration: int, checkpoint: str) -> None:
        super().__init__(f'training stopped by {signal_name} after iteration {iteration}; '
                         f'checkpoint {checkpoint}')
        self.signal_name, self.iteration, self.checkpoint = signal_name, iteration, checkpoint


class SkipFirstBatches:
    """A batch sampler that leaves out the first ``skip`` batches of ``batch_sampler``'s next
    pass (it draws their indices, which is cheap, so that the rest come out unchanged)."""

    def __init__(self, batch_sampler, skip: int) -> None:
        self.batch_sampler, self.skip = batch_sampler, skip

    @property
    def sampler(self):  # mmengine's DistSamplerSeedHook sets the epoch through it
        return self.batch_sampler.sampler

    def __iter__(self):
        batches = iter(self.batch_sampler)
        for _ in range(self.skip):
            next(batches, None)
        yield from batches

    def __len__(self) -> int:
        return max(len(self.batch_sampler) - self.skip, 0)


def resumed_loader(loader: DataLoader, skip: int) -> DataLoader:
    """A copy of ``loader`` without its first ``skip`` batches; its workers, collate function
    and seeding are the original's. Its base seed comes from a private generator, so creating
    its iterator draws nothing from torch's global generator."""
    extra = dict(prefetch_factor=loader.prefetch_factor) if loader.num_workers > 0 else {}
    return DataLoader(
        loader.dataset, batch_sampler=SkipFirstBatches(loader.batch_sampler, skip),
        num_workers=loader.num_workers, collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory, timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        generator=torch.Generator().manual_seed(skip),
        persistent_workers=loader.persistent_workers,
        pin_memory_device=loader.pin_memory_device, **extra)


def write_atomically(path: str, text: str) -> None:
    tmp = f'{path}.tmp'
    with open(tmp, 'w') as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@HOOKS.register_module()
class PreemptionHook(Hook):
    """Save a checkpoint when the job is told to stop, and resume inside an epoch exactly.

    Args:
        signals (Sequence[str]): the stop signals. Defaults to ``('SIGTERM', 'SIGUSR1')``
            (slurm's preemption signal and the usual ``--signal`` choice).
        interval_minutes (float, optional): also save every that many minutes, keeping only
            the latest such checkpoint (``timed_iter_<N>.pth``). Defaults to None (off).
    """
    # after every other hook has finished the iteration (schedulers, EMA, logging)
    priority = 'LOWEST'

    def __init__(self, signals=DEFAULT_SIGNALS, interval_minutes: Optional[float] = None) -> None:
        unknown = [name for name in signals if not isinstance(getattr(signal, str(name), None),
                                                              signal.Signals)]
        if unknown:
            raise ValueError(f'PreemptionHook: {unknown} are not signal names (e.g. SIGTERM)')
        if interval_minutes is not None and interval_minutes <= 0:
            raise ValueError(f'PreemptionHook: interval_minutes={interval_minutes} must be '
                             f'positive (or None for no time-based checkpoints)')
        self.signals = tuple(getattr(signal, name) for name in signals)
        self.interval_s = None if interval_minutes is None else 60.0 * interval_minutes
        self._received: Optional[int] = None
        self._previous_handlers: Dict[int, object] = {}
        self._last_timed_save = time.monotonic()
        self._last_timed_file: Optional[str] = None
        self._full_loader: Optional[DataLoader] = None

    # ------------------------------------------------------------------ signals
    def _on_signal(self, signum, frame) -> None:
        # only a flag: the iteration finishes and all ranks agree before anything is saved
        if self._received is None:
            self._received = signum

    def _install_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            print_log('PreemptionHook: not in the main thread, stop signals are not handled',
                      'current')
            return
        for signum in self.signals:
            self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}

    # ------------------------------------------------------------------ hook points
    def before_train(self, runner) -> None:
        self._install_handlers()
        self._last_timed_save = time.monotonic()
        loop = runner.train_loop
        if not isinstance(loop, EpochBasedTrainLoop) or runner.iter == 0:
            return
        loader = loop.dataloader
        per_epoch = len(loader)
        skip = runner.iter - runner.epoch * per_epoch
        if skip <= 0:
            return
        if not 0 < skip <= per_epoch or loader.batch_sampler is None:
            print_log(f'PreemptionHook: cannot resume inside epoch {runner.epoch + 1} at '
                      f'iteration {runner.iter} ({per_epoch} per epoch); the epoch starts '
                      f'from its first batch', 'current', level=30)
            return
        self._full_loader = loader
        loop.dataloader = resumed_loader(loader, skip)
        print_log(f'resuming inside epoch {runner.epoch + 1}: skipping its first {skip} of '
                  f'{per_epoch} batches, already trained on', 'current')

    def after_train_epoch(self, runner) -> None:
        if self._full_loader is not None:  # the partial epoch is over
            runner.train_loop.dataloader, self._full_loader = self._full_loader, None

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        timed = (self.interval_s is not None and is_main_process()
                 and time.monotonic() - self._last_timed_save >= self.interval_s)
        flags = torch.tensor([0 if self._received is None else int(self._received), int(timed)])
        if runner.world_size > 1:  # every rank stops, or saves, at the same iteration
            all_reduce(flags, op='max')
        signum, timed = int(flags[0]), bool(flags[1])
        if signum:
            self._stop(runner, signal.Signals(signum).name)
        if timed:
            previous, self._last_timed_file = self._last_timed_file, self._save(runner, 'timed')
            if previous is not None and is_main_process() and osp.exists(previous):
                os.remove(previous)
            self._last_timed_save = time.monotonic()

    def after_train(self, runner) -> None:
        self._restore_handlers()

    # ------------------------------------------------------------------ saving
    def _save(self, runner, kind: str) -> str:
        """Save the state after this iteration as ``<kind>_iter_<N>.pth`` in the work dir and
        point ``last_checkpoint`` at it; every rank returns once the file is complete."""
        iteration = runner.iter + 1
        filename = f'{kind}_iter_{iteration}.pth'
        path = osp.join(runner.work_dir, filename)
        tmp_name = f'.{filename}.tmp'
        # mmengine writes the file in place; a temporary name keeps a half-written file from
        # ever being the one resumed from
        runner.save_checkpoint(runner.work_dir, tmp_name, by_epoch=False, save_optimizer=True,
                               save_param_scheduler=True)
        if is_main_process():
            os.replace(osp.join(runner.work_dir, tmp_name), path)
            write_atomically(osp.join(runner.work_dir, 'last_checkpoint'), path)
            print_log(f'saved {path} (iteration {iteration})', 'current')
        if runner.world_size > 1:
            barrier()
        return path

    def _stop(self, runner, signal_name: str) -> None:
        print_log(f'{signal_name} received: saving a checkpoint at iteration '
                  f'{runner.iter + 1} and stopping', 'current', level=30)
        path = self._save(runner, 'preempted')
        self._restore_handlers()
        raise TrainingPreempted(signal_name, runner.iter + 1, path)
