"""Make mmengine Runner checkpoints loadable with ``torch.load(weights_only=True)``.

torch >= 2.6 loads checkpoints with ``weights_only=True``. A checkpoint written by mmengine
0.10's Runner also holds the message hub's ``HistoryBuffer`` objects (which pickle their
statistics methods through ``builtins.getattr``) and numpy arrays and scalars, so loading or
resuming fails. Allow-listing ``getattr`` would let any checkpoint run arbitrary code, and
switching ``weights_only`` off globally is worse. Instead this hook writes those objects as
tensors and plain Python values, and rebuilds the history buffers after loading.

Two more things make loading robust:

- strictness: mmengine's Runner loads ``load_from`` and ``--resume`` checkpoints with
  ``strict=False`` and only warns, so ``tools/test.py`` would score random weights after a
  mismatch. The hook compares keys and shapes first and raises with the list.
- exact resumption: mmengine saves the seed but not the random generators' states, so a resumed
  run draws other augmentations than an uninterrupted one. The hook saves the Python, numpy and
  torch generator states with every checkpoint and puts them back when training resumes.
  Validation, which a resumed run does not repeat, runs on a copy of the states, so that it
  draws nothing from the training stream.
- older optimizer layouts: a checkpoint saved with one optimizer group per parameter (tnt_mm
  0.1.0, mmengine's constructor) resumes into a run whose groups are merged per setting
  (:func:`~tnt_mm.engine.optimizers.merge_checkpoint_groups`), its schedulers' lrs included.
"""
import random
from typing import Any, Optional

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer, print_log
from mmengine.model import is_model_wrapper

from tnt_mm.engine.checkpoint import state_dict_mismatches
from tnt_mm.engine.optimizers.merged_groups_constructor import merge_checkpoint_groups
from tnt_mm.registry import HOOKS

_BUFFER_MARK = '__tnt_mm_history_buffer__'


def to_safe(obj: Any) -> Any:
    """Replace HistoryBuffers, numpy arrays and numpy scalars by tensors and plain values."""
    if isinstance(obj, HistoryBuffer):
        log, count = obj.data
        return {_BUFFER_MARK: True, 'log': torch.as_tensor(np.asarray(log, dtype=np.float64)),
                'count': torch.as_tensor(np.asarray(count, dtype=np.float64)),
                'max_length': int(obj.max_length)}
    if isinstance(obj, np.ndarray):
        return obj.tolist() if obj.dtype == object else torch.from_numpy(obj.copy())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return type(obj)((key, to_safe(value)) for key, value in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_safe(value) for value in obj)
    return obj


def restore_history_buffers(obj: Any) -> Any:
    """Rebuild the HistoryBuffers that :func:`to_safe` flattened."""
    if isinstance(obj, dict):
        if obj.get(_BUFFER_MARK):
            return HistoryBuffer(obj['log'].tolist(), obj['count'].tolist(), obj['max_length'])
        return type(obj)((key, restore_history_buffers(value)) for key, value in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(restore_history_buffers(value) for value in obj)
    return obj


def get_rng_state() -> dict:
    """The states of Python's, numpy's and torch's global generators, as tensors and plain
    values (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = dict(python=random.getstate(),
                 numpy=dict(kind=kind, keys=torch.from_numpy(keys.astype(np.int64)), pos=int(pos),
                            has_gauss=int(has_gauss), cached_gaussian=float(cached)),
                 torch=torch.get_rng_state())
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`get_rng_state` saved.

    The tensors may come back on a GPU (mmengine resumes with ``map_location`` set to the
    current device), and the generators take CPU byte tensors.
    """
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    numpy = state['numpy']
    np.random.set_state((numpy['kind'], numpy['keys'].cpu().numpy().astype(np.uint32),
                         numpy['pos'], numpy['has_gauss'], numpy['cached_gaussian']))
    torch.set_rng_state(state['torch'].cpu())
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state['cuda']])


@HOOKS.register_module()
class SafeCheckpointHook(Hook):
    """Write checkpoints that load with ``weights_only=True``; check and read them back.

    Add it to ``custom_hooks``; every config of this package inherits it from
    ``configs/_base_/tnt_runtime.py``.

    Args:
        strict (bool): raise when a checkpoint loaded by the Runner (``load_from``,
            ``--resume``, ``tools/test.py``'s checkpoint) lacks keys of the model, has keys the
            model lacks, or has other shapes. Set it False only to fine-tune from a model with
            another head on purpose; for a backbone use its ``init_cfg`` instead, which is
            strict about the backbone and resamples the position embedding. Defaults to True.
    """
    # After every other hook has put its state into the checkpoint (e.g. EMAHook).
    priority = 'VERY_LOW'

    def __init__(self, strict: bool = True) -> None:
        self.strict = strict
        self._rng_state: Optional[dict] = None
        self._rng_before_val: Optional[dict] = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['rng_state'] = get_rng_state()
        for key in list(checkpoint):
            checkpoint[key] = to_safe(checkpoint[key])

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.strict:
            model = runner.model.module if is_model_wrapper(runner.model) else runner.model
            # as mmengine reads it: under "state_dict", or the whole file is the state dict
            state = checkpoint.get('state_dict', checkpoint)
            state = {k[len('module.'):] if k.startswith('module.') else k: v
                     for k, v in state.items()}
            problems = state_dict_mismatches(model, state)
            if problems:
                raise RuntimeError('\n'.join(
                    [f'{runner.cfg.get("load_from") or "the checkpoint"} does not match the '
                     f'model {type(model).__name__} built from the config:', *problems,
                     'Use the checkpoint written for this config. A pre-trained backbone goes '
                     "into model.backbone.init_cfg=dict(type='Pretrained', checkpoint=...) "
                     'instead of load_from (it resamples the position embedding to the new '
                     'input size); to load a different model on purpose, add '
                     "dict(type='tnt_mm.SafeCheckpointHook', strict=False) to custom_hooks."]))
        if 'message_hub' in checkpoint:
            checkpoint['message_hub'] = restore_history_buffers(checkpoint['message_hub'])
        self._rng_state = checkpoint.get('rng_state')
        # the runner builds its optimizer before it loads a checkpoint to resume
        optimizer = getattr(getattr(runner, 'optim_wrapper', None), 'optimizer', None)
        if isinstance(optimizer, torch.optim.Optimizer) and \
                merge_checkpoint_groups(checkpoint, optimizer):
            print_log(f'the checkpoint has one optimizer group per parameter; merged into '
                      f'this run\'s {len(optimizer.param_groups)} groups, its parameter '
                      f'schedulers too', logger='current')

    def before_train(self, runner) -> None:
        # Runner.train() resumes after building the model and initialising its weights, which
        # draw random numbers; put the generators back only now, just before the first step.
        state, self._rng_state = self._rng_state, None
        if state is None or runner.iter == 0:  # not a resumed run (load_from, or no state)
            return
        if (runner.cfg.get('randomness') or {}).get('diff_rank_seed') and runner.world_size > 1:
            # only rank 0's state is saved; copying it to every rank would undo diff_rank_seed
            print_log('random generator states not restored: diff_rank_seed=True', 'current')
            return
        set_rng_state(state)
        print_log(f'restored the random generator states saved at iteration {runner.iter}',
                  'current')

    def before_val(self, runner) -> None:
        self._rng_before_val = get_rng_state()

    def after_val(self, runner) -> None:
        # The validation data loader draws its base seed from torch's generator; without this an
        # uninterrupted run (which validated) and a resumed one (which did not) would diverge.
        if self._rng_before_val is not None:
            set_rng_state(self._rng_before_val)
            self._rng_before_val = None
