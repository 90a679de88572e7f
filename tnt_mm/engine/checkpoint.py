"""How this package reads checkpoints: safely, trusted per file only, and strictly.

mmengine reads every checkpoint (``load_from``, ``--resume``, ``init_cfg=dict(type='Pretrained')``,
``mmengine.runner.load_checkpoint``) through ``CheckpointLoader``, whose local-file loader calls
``torch.load`` without ``weights_only``: its safety then depends on the torch version (the
default became ``weights_only=True`` only in torch 2.6, and this package accepts torch >= 2.1),
and a refused file surfaces as torch's long message, which suggests allow-listing the global.

Where this package loads, it loads safely, explicitly: the backbone's ``Pretrained`` path,
``tools/train.py`` and ``tools/test.py`` (``load_from``, ``--resume``), and the converter.
:func:`load_local` is the safe loader, and :func:`safe_checkpoint_loading` puts it in place of
mmengine's local-file loader for the block that loads (restored afterwards), so that the
Runner's own loading goes through it. Importing ``tnt_mm`` changes nothing of mmengine's
loaders: it only adds two prefixes of its own:

- ``trusted://PATH``, the explicit, per-file opt-in for a checkpoint written by another tool
  that you trust: that file alone loads with ``weights_only=False``. Nothing is allow-listed
  and the protection is never switched off for other files;
- ``hf-hub:REPO[@REVISION][/FILE]``: a checkpoint of the Hugging Face Hub, downloaded into the
  hub's own cache (offline once cached, ``HF_HUB_OFFLINE=1``), read weights-only.
"""
import contextlib
import logging
import os.path as osp
import pickle
import re
from typing import Dict, Iterator, List, Optional

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.runner.checkpoint import CheckpointLoader

TRUSTED_PREFIX = 'trusted://'
HUB_PREFIX = 'hf-hub:'
# what a hub repository's weights are called, in the order tried (timm's, then PyTorch's)
HUB_FILES = ('model.safetensors', 'pytorch_model.bin')


def refused_global(exc: Exception) -> Optional[str]:
    """The Python object a weights-only load refused (e.g. ``posix.system``), or None when the
    error is about something else (a corrupted file gives "Unsupported operand")."""
    match = re.search(r'GLOBAL ([\w.]+)', str(exc))
    return match.group(1) if match else None


def load_local(filename: str, map_location=None):
    """Read a local checkpoint with ``torch.load(weights_only=True)`` (a ``.safetensors`` file
    with safetensors).

    Raises:
        FileNotFoundError: the file does not exist.
        pickle.UnpicklingError: the file holds Python objects besides tensors and plain
            containers; the message says how to opt in for a trusted file.
        RuntimeError: the file is not a readable PyTorch checkpoint (truncated, corrupted).
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint {filename} does not exist')
    if filename.endswith('.safetensors'):  # tensors only, by construction
        from safetensors.torch import load_file
        return load_file(filename, device=str(map_location or 'cpu'))
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


@contextlib.contextmanager
def safe_checkpoint_loading() -> Iterator[None]:
    """Within the block, mmengine's ``CheckpointLoader`` reads local files with
    :func:`load_local` (weights only, clear refusals); its own loader is back afterwards."""
    schemes = CheckpointLoader._schemes
    previous = schemes.get('')
    CheckpointLoader._register_scheme('', load_local, force=True)
    try:
        yield
    finally:
        if previous is None:
            CheckpointLoader._schemes.pop('', None)
        else:
            CheckpointLoader._register_scheme('', previous, force=True)


def load_checkpoint_safely(filename: str, map_location=None):
    """``CheckpointLoader.load_checkpoint`` with local files read by :func:`load_local`: any
    scheme (``trusted://``, ``hf-hub:``, URLs) works, no local pickle runs code."""
    with safe_checkpoint_loading():
        return CheckpointLoader.load_checkpoint(filename, map_location=map_location)


def _register_new(prefix: str):
    """Register a loader for a prefix of this package's own, leaving any loader that another
    library registered for it in place."""
    def register(loader):
        if prefix not in CheckpointLoader._schemes:
            CheckpointLoader._register_scheme(prefix, loader)
        return loader
    return register


@_register_new(TRUSTED_PREFIX)
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


def parse_hub_name(name: str):
    """``hf-hub:ORG/REPO[@REVISION][/FILE]`` -> (repo id, revision or None, file or None)."""
    rest = name[len(HUB_PREFIX):] if name.startswith(HUB_PREFIX) else name
    parts = rest.split('/')
    if len(parts) < 2 or not all(parts):
        raise ValueError(f'{name!r} is not a hub name: expected {HUB_PREFIX}ORG/REPO, optionally '
                         f'@REVISION after the repository and /FILE after that (e.g. '
                         f'{HUB_PREFIX}timm/tnt_s_patch16_224.in1k)')
    repo, revision = parts[1].partition('@')[::2]
    return f'{parts[0]}/{repo}', revision or None, '/'.join(parts[2:]) or None


def hub_file(name: str) -> str:
    """The local path of a hub checkpoint, downloaded into the Hugging Face cache if it is not
    there (``HF_HUB_OFFLINE=1``: from the cache only)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
    repo, revision, filename = parse_hub_name(name)
    missing = []
    for candidate in (filename,) if filename else HUB_FILES:
        try:
            return hf_hub_download(repo, candidate, revision=revision)
        except LocalEntryNotFoundError:  # offline (or no network) and not in the cache
            missing.append(f'{candidate} (not in the local hub cache, and the hub cannot be '
                           f'reached or HF_HUB_OFFLINE is set)')
        except EntryNotFoundError:  # (the parent class of the one above)
            missing.append(candidate)
    raise FileNotFoundError(f'{name}: the repository {repo} has none of '
                            f'{", ".join(missing)}')


@_register_new(HUB_PREFIX)
def load_from_hub(filename: str, map_location=None):
    """Read ``hf-hub:ORG/REPO[@REVISION][/FILE]``: safetensors, or a PyTorch file weights-only;
    returns the state dict (what converting reads)."""
    return load_local(hub_file(filename), map_location=map_location)

