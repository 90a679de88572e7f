"""How checkpoints are read: safely by default, trusted per file, and strictly.

mmengine reads every checkpoint (``load_from``, ``--resume``, ``init_cfg=dict(type='Pretrained')``,
``mmengine.runner.load_checkpoint``) through ``CheckpointLoader``, whose local-file loader calls
``torch.load`` without ``weights_only``: its safety then depends on the torch version (the
default became ``weights_only=True`` only in torch 2.6, and this package accepts torch >= 2.1),
and a refused file surfaces as torch's long message, which suggests allow-listing the global.
Importing ``tnt_mm`` registers two loaders in its place:

- a plain path loads with ``weights_only=True`` on any torch version; a file that holds other
  Python objects (a pickle that would run code) is refused with one message that says so;
- ``trusted://PATH`` is the explicit, per-file opt-in for a checkpoint written by another tool
  that you trust: that file alone loads with ``weights_only=False``. Nothing is allow-listed and
  the protection is never switched off for other files.
"""
import logging
import os.path as osp
import pickle
import re
from typing import Dict, List, Optional

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.runner.checkpoint import CheckpointLoader

TRUSTED_PREFIX = 'trusted://'


def refused_global(exc: Exception) -> Optional[str]:
    """The Python object a weights-only load refused (e.g. ``posix.system``), or None when the
    error is about something else (a corrupted file gives "Unsupported operand")."""
    match = re.search(r'GLOBAL ([\w.]+)', str(exc))
    return match.group(1) if match else None


@CheckpointLoader.register_scheme(prefixes='', force=True)
def load_from_local(filename: str, map_location=None):
    """Read a local checkpoint with ``torch.load(weights_only=True)``.

    Raises:
        FileNotFoundError: the file does not exist.
        pickle.UnpicklingError: the file holds Python objects besides tensors and plain
            containers; the message says how to opt in for a trusted file.
        RuntimeError: the file is not a readable PyTorch checkpoint (truncated, corrupted).
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint {filename} does not exist')
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        name = refused_global(exc)
        if name is None:  # not a pickle of objects: a damaged file
            raise RuntimeError(f'cannot read {filename} as a PyTorch checkpoint; it may be '
                               f'truncated or corrupted (unpickling failed)') from None
        # `from None`: torch's own text suggests allow-listing the global, which for an unknown
        # file is exactly what must not be done.
        raise pickle.UnpicklingError(
            f'{filename} holds Python objects besides tensors (it refers to {name}), and the '
            f'safe loader (torch.load weights_only=True) refuses to run them. Checkpoints '
            f'written by tnt_mm never need this. If the file comes from a tool you trust, '
            f'load that file alone as "{TRUSTED_PREFIX}{filename}"') from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RuntimeError(f'cannot read {filename} as a PyTorch checkpoint; it may be '
                           f'truncated or corrupted ({first})') from exc


@CheckpointLoader.register_scheme(prefixes=TRUSTED_PREFIX)
def load_from_trusted(filename: str, map_location=None):
    """Read ``trusted://PATH`` with ``weights_only=False``: the user's opt-in for this file."""
    path = osp.expanduser(filename[len(TRUSTED_PREFIX):])
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint {path} does not exist')
    print_log(f'{path}: loading with weights_only=False, as "{TRUSTED_PREFIX}" asks; this runs '
              f'any code the file holds', 'current', level=logging.WARNING)
    return torch.load(path, map_location=map_location, weights_only=False)


def state_dict_mismatches(model: nn.Module, state_dict: Dict[str, torch.Tensor]) -> List[str]:
    """Compare a checkpoint's state dict with a model's, key by key and shape by shape.

    Returns:
        list[str]: one line per kind of difference (missing, unexpected, shape mismatches);
        empty when they match.
    """
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state_dict)
    unexpected = sorted(k for k in state_dict if k not in own)
    mismatched = [f'{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}'
                  for k in sorted(set(own) & set(state_dict))
                  if torch.is_tensor(state_dict[k]) and state_dict[k].shape != own[k].shape]
    lines = []
    for name, keys in (('missing from the checkpoint', missing),
                       ('unexpected in the checkpoint', unexpected),
                       ('shape mismatches', mismatched)):
        if keys:
            shown = keys if len(keys) <= 20 else keys[:20] + [f'... {len(keys) - 20} more']
            lines.append(f'  {name} ({len(keys)}): {shown}')
    return lines
