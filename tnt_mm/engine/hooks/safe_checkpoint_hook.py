"""Make mmengine Runner checkpoints loadable with ``torch.load(weights_only=True)``.

torch >= 2.6 loads checkpoints with ``weights_only=True``. A checkpoint written by mmengine
0.10's Runner also holds the message hub's ``HistoryBuffer`` objects (which pickle their
statistics methods through ``builtins.getattr``) and numpy arrays and scalars, so loading or
resuming fails. Allow-listing ``getattr`` would let any checkpoint run arbitrary code, and
switching ``weights_only`` off globally is worse. Instead this hook writes those objects as
tensors and plain Python values, and rebuilds the history buffers after loading.
"""
from typing import Any

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer

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


@HOOKS.register_module()
class SafeCheckpointHook(Hook):
    """Write checkpoints that load with ``weights_only=True``; read them back for resuming.

    Add it to ``custom_hooks`` (this package's configs and ``tools/train.py`` do).
    """
    # After every other hook has put its state into the checkpoint (e.g. EMAHook).
    priority = 'VERY_LOW'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        for key in list(checkpoint):
            checkpoint[key] = to_safe(checkpoint[key])

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if 'message_hub' in checkpoint:
            checkpoint['message_hub'] = restore_history_buffers(checkpoint['message_hub'])
