#!/usr/bin/env python
"""Convert a TNT checkpoint (official Huawei, timm, timm legacy, or mmpretrain) to tnt_mm.

    python tools/model_converters/tnt2mm.py tnt_s_81.5.pth.tar checkpoints/tnt_s_official.pth
    python tools/model_converters/tnt2mm.py hf-hub:timm/tnt_s_patch16_224.in1k tnt_s.pth

The format is recognised from the keys. The output holds ``backbone.*`` (and ``head.fc.*`` when
the source has a classifier) and loads strictly through
``init_cfg=dict(type='Pretrained', checkpoint=DST)`` or as a classifier's ``load_from``.
"""
import argparse
import os
import os.path as osp
import pickle
import tempfile

import torch

from tnt_mm.engine.checkpoint import HUB_PREFIX, load_from_hub, refused_global
from tnt_mm.models.backbones.tnt_convert import CheckpointFormatError, convert_state_dict
from tnt_mm.utils.cli import UserError, add_debug_arg, require_file, run_cli
from tnt_mm.version import __version__


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='checkpoint to convert (.pth / .pth.tar / .bin), or a '
                        'Hugging Face Hub name, hf-hub:ORG/REPO[@REVISION][/FILE]')
    parser.add_argument('dst', help='where to write the converted checkpoint')
    parser.add_argument(
        '--trust-pickle', action='store_true',
        help='load SRC with weights_only=False. Only for a file you trust: training checkpoints '
        'of the official code also pickle their argparse settings, which the safe loader refuses')
    add_debug_arg(parser)
    return parser.parse_args(argv)


def load_source(path: str, trust_pickle: bool):
    if path.startswith(HUB_PREFIX):
        try:
            return load_from_hub(path)
        except (ValueError, FileNotFoundError) as exc:
            raise UserError(str(exc)) from exc
    require_file(path, 'checkpoint')
    try:
        return torch.load(path, map_location='cpu', weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        name = refused_global(exc)
        if name is None:
            raise UserError(f'cannot read {path} as a PyTorch checkpoint; it may be truncated '
                            f'or corrupted (unpickling failed)') from exc
        raise UserError(
            f'{path} holds Python objects besides tensors (it refers to {name}), '
            f'which the safe loader refuses. If you trust where the file comes from, run again '
            f'with --trust-pickle') from exc
    except Exception as exc:  # truncated zip, not a torch file, ...
        first = str(exc).strip().split('. ')[0].splitlines()[0] if str(exc).strip() else ''
        raise UserError(f'cannot read {path} as a PyTorch checkpoint; it may be truncated or '
                        f'corrupted ({type(exc).__name__}: {first})') from exc


def save_atomic(obj, path: str) -> None:
    """Write to a temporary file beside ``path``, then rename: an interrupted run never
    leaves a half-written checkpoint under the final name."""
    directory = osp.dirname(osp.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + osp.basename(path), suffix='.tmp', dir=directory)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def main(argv=None) -> None:
    args = parse_args(argv)
    source = load_source(args.src, args.trust_pickle)
    try:
        state_dict, meta = convert_state_dict(source)
    except CheckpointFormatError as exc:
        raise UserError(f'{args.src}: {exc}') from exc
    source_name = args.src if args.src.startswith(HUB_PREFIX) else osp.basename(args.src)
    meta.update(converted_from=source_name, tnt_mm_version=__version__)
    save_atomic(dict(state_dict=state_dict, meta=meta), args.dst)
    num_head = sum(k.startswith('head.') for k in state_dict)
    print(f'{args.src}: {meta["source_format"]} TNT, layout={meta["layout"]!r}, '
          f'arch={meta["arch"]}, SE={meta["with_se"]}, '
          f'{len(state_dict) - num_head} backbone tensors'
          + (f' + {num_head} classifier tensors' if num_head else ''))
    print(f'wrote {args.dst}; use it with '
          f"backbone=dict(type='tnt_mm.TNT', layout={meta['layout']!r}, ..., "
          f"init_cfg=dict(type='Pretrained', checkpoint={args.dst!r}))")


if __name__ == '__main__':
    run_cli(main)
