"""TNT checkpoint formats: recognise, convert to this package's layout, and load strictly.

Formats in circulation (README, "Weights and conversion"):

- ``official``: Huawei's ``tnt_s_81.5.pth.tar`` / ``tnt_b_82.9.pth.tar`` (``outer_pos``,
  ``blocks.i.inner_attn.qk``, ...), raw or wrapped in ``state_dict``.
- ``timm``: timm >= 1.0 ``tnt_s_patch16_224`` / ``tnt_b_patch16_224`` (``patch_pos``,
  ``blocks.i.attn_in.qk``, ``pixel_pos`` as (1, c, 4, 4)).
- ``timm_legacy``: timm's ``tnt_s_legacy_patch16_224`` (the same names, legacy network).
- ``mmpretrain``: mmpretrain's ``TNT`` (legacy network, ``layers.i.inner_block.attn.attn``).

A converted checkpoint is ``{'state_dict': {'backbone.<key>': ..., 'head.fc.<key>': ...},
'meta': {...}}``: the backbone keys of :class:`TNT` and mmpretrain's ``LinearClsHead``, so the
same file initialises a backbone (``init_cfg=dict(type='Pretrained', ...)``) or a classifier.
"""
import math
import re
from collections import OrderedDict
from typing import Dict, Optional, Tuple

import torch
from mmengine.logging import print_log

from ..layers import resample_pos_embed
from .tnt_arch import ARCH_ZOO

FORMATS = ('official', 'timm', 'timm_legacy', 'mmpretrain')
StateDict = Dict[str, torch.Tensor]

# Official key components -> this package's (= timm's) names.
_OFFICIAL_NAMES = {
    'patch_embed': 'pixel_embed',
    'outer_pos': 'patch_pos',
    'inner_pos': 'pixel_pos',
    'proj_norm1': 'norm1_proj',
    'proj_norm2': 'norm2_proj',
    'inner_norm1': 'norm_in',
    'inner_attn': 'attn_in',
    'inner_norm2': 'norm_mlp_in',
    'inner_mlp': 'mlp_in',
    'outer_norm1': 'norm_out',
    'outer_attn': 'attn_out',
    'outer_norm2': 'norm_mlp',
    'outer_mlp': 'mlp',
}
# The official SE is nn.Sequential(LN, Linear, ReLU, Linear, Tanh).
_OFFICIAL_SE = {'se_layer.fc.0.': 'se.norm.', 'se_layer.fc.1.': 'se.fc1.',
                'se_layer.fc.3.': 'se.fc2.'}
# mmpretrain's mmcv-built transformer blocks -> (inner, outer) names here.
_MMPRETRAIN_BLOCK = {
    'norm_attn': ('norm_in', 'norm_out'),
    'attn.attn.out_proj': ('attn_in.proj', 'attn_out.proj'),
    'norm_ffn': ('norm_mlp_in', 'norm_mlp'),
    'ffn.layers.0.0': ('mlp_in.fc1', 'mlp.fc1'),
    'ffn.layers.1': ('mlp_in.fc2', 'mlp.fc2'),
}


class CheckpointFormatError(ValueError):
    """The checkpoint is not one of the TNT formats this package converts."""


def unwrap_state_dict(checkpoint) -> StateDict:
    """Return the tensor dict inside a training checkpoint (``state_dict`` / ``model``),
    without a DistributedDataParallel ``module.`` prefix."""
    state = checkpoint
    if isinstance(state, dict):
        for key in ('state_dict', 'model'):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state:
        raise CheckpointFormatError(
            f'expected a dict of tensors (or one under "state_dict"/"model"), '
            f'found {type(checkpoint).__name__}'
            + (f' with keys {sorted(checkpoint)[:8]}' if isinstance(checkpoint, dict) else ''))
    non_tensors = [k for k, v in state.items() if not torch.is_tensor(v)]
    if non_tensors:
        raise CheckpointFormatError(f'expected a dict of tensors, but {non_tensors[:5]} are '
                                    f'not tensors')
    if all(k.startswith('module.') for k in state):
        state = {k[len('module.'):]: v for k, v in state.items()}
    return dict(state)


def _describe(state: StateDict) -> str:
    keys = sorted(state)
    return f'{len(keys)} tensors, e.g. {keys[:6]}'


def detect_format(state: StateDict) -> str:
    """Name the format of a TNT state dict: one of :data:`FORMATS`, or ``'tnt_mm'`` for one
    that is already converted. Anything else raises :class:`CheckpointFormatError`."""
    keys = set(state)
    if any(re.match(r'^(backbone\.)?layers\.\d+\.inner_block\.', k) for k in keys):
        return 'mmpretrain'
    if 'outer_pos' in keys or any('.inner_attn.' in k for k in keys):
        return 'official'
    if 'backbone.patch_pos' in keys and 'backbone.pixel_pos' in keys:
        return 'tnt_mm'
    if 'patch_pos' in keys and 'pixel_pos' in keys and any('.attn_in.' in k for k in keys):
        if state['pixel_pos'].dim() == 3:
            return 'tnt_mm'
        return 'timm' if 'blocks.0.norm2_proj.weight' in keys else 'timm_legacy'
    raise CheckpointFormatError(
        f'not a TNT checkpoint this package knows: found {_describe(state)}. Expected the '
        f'official Huawei TNT (keys "outer_pos", "blocks.0.inner_attn.qk.weight"), timm TNT '
        f'("patch_pos", "blocks.0.attn_in.qk.weight") or mmpretrain TNT '
        f'("backbone.layers.0.inner_block.attn.attn.in_proj_weight")')


def _words_last(pixel_pos: torch.Tensor) -> torch.Tensor:
    # timm / mmpretrain keep the word position embedding as (1, c, s, s): -> (1, s*s, c)
    return pixel_pos.flatten(2).transpose(1, 2).contiguous()


def _convert_official(state: StateDict) -> StateDict:
    out = OrderedDict()
    for key, value in state.items():
        if key == 'outer_tokens':  # an unused, all-zero parameter of the official model
            continue
        for old, new in _OFFICIAL_SE.items():
            key = key.replace(old, new)
        key = '.'.join(_OFFICIAL_NAMES.get(part, part) for part in key.split('.'))
        out[key] = value
    return out


def _convert_timm(state: StateDict) -> StateDict:
    out = OrderedDict(state)
    out['pixel_pos'] = _words_last(state['pixel_pos'])
    return out


def _convert_mmpretrain(state: StateDict) -> StateDict:
    out = OrderedDict()
    for key, value in state.items():
        key = key[len('backbone.'):] if key.startswith('backbone.') else key
        if key == 'projection.weight' or key == 'projection.bias':
            out['proj.' + key.split('.')[-1]] = value
            continue
        if key == 'pixel_pos':
            out[key] = _words_last(value)
            continue
        match = re.match(r'^layers\.(\d+)\.(.+)$', key)
        if not match:
            out[key] = value  # stem, cls_token, patch_pos, norm, head.fc.*
            continue
        block, rest = f'blocks.{match.group(1)}', match.group(2)
        if rest.startswith('norm_proj.'):
            out[f'{block}.norm1_proj.{rest.split(".")[-1]}'] = value
            continue
        if rest.startswith('projection.'):
            out[f'{block}.proj.{rest.split(".")[-1]}'] = value
            continue
        part, rest = rest.split('.', 1)
        side = 0 if part == 'inner_block' else 1
        prefix = 'attn_in' if side == 0 else 'attn_out'
        if rest.startswith('attn.attn.in_proj_'):
            # nn.MultiheadAttention stacks q, k, v; TNT keeps q and k in "qk", v apart.
            kind = rest.split('_')[-1]  # weight | bias
            dim = value.shape[0] // 3
            out[f'{block}.{prefix}.qk.{kind}'] = value[:2 * dim]
            out[f'{block}.{prefix}.v.{kind}'] = value[2 * dim:]
            continue
        name, kind = rest.rsplit('.', 1)
        if name not in _MMPRETRAIN_BLOCK:
            raise CheckpointFormatError(f'unexpected mmpretrain TNT key "{key}"')
        out[f'{block}.{_MMPRETRAIN_BLOCK[name][side]}.{kind}'] = value
    return out


_CONVERTERS = {
    'official': (_convert_official, 'official'),
    'timm': (_convert_timm, 'official'),
    'timm_legacy': (_convert_timm, 'legacy'),
    'mmpretrain': (_convert_mmpretrain, 'legacy'),
}


def infer_arch(backbone: StateDict) -> Dict[str, int]:
    """Read the widths and depth from the weights; head counts come from the known archs
    (weights do not determine them)."""
    inner_dim = backbone['pixel_pos'].shape[-1]
    outer_dim = backbone['patch_pos'].shape[-1]
    depth = 1 + max(int(m.group(1)) for k in backbone
                    for m in [re.match(r'^blocks\.(\d+)\.', k)] if m)
    for name in ('tiny', 'small', 'base'):
        arch = ARCH_ZOO[name]
        if (arch['inner_dim'], arch['outer_dim'], arch['depth']) == (inner_dim, outer_dim, depth):
            return dict(arch)
    return dict(inner_dim=inner_dim, outer_dim=outer_dim, depth=depth)


def convert_state_dict(checkpoint) -> Tuple[StateDict, dict]:
    """Convert any supported TNT checkpoint (object as loaded by ``torch.load``).

    Returns:
        tuple: the state dict (``backbone.*`` and, if the source has a classifier, ``head.fc.*``)
        and its meta (source format, layout, arch, ``with_se``, ``inner_block_indices``).
    """
    state = unwrap_state_dict(checkpoint)
    fmt = detect_format(state)
    if fmt == 'tnt_mm':
        raise CheckpointFormatError(
            'this checkpoint is already in the tnt_mm layout; use it directly with '
            "init_cfg=dict(type='Pretrained', checkpoint=...)")
    convert, layout = _CONVERTERS[fmt]
    converted = convert(state)
    head = {k: converted.pop(k) for k in [k for k in converted if re.match(r'^head(\.fc)?\.', k)]}
    backbone = converted
    depth_keys = {int(m.group(1)) for k in backbone for m in [re.match(r'^blocks\.(\d+)\.', k)] if m}
    inner = sorted(i for i in depth_keys if f'blocks.{i}.norm_in.weight' in backbone)
    meta = dict(
        source_format=fmt,
        layout=layout,
        arch=infer_arch(backbone),
        with_se=any('.se.' in k for k in backbone),
        inner_block_indices=None if len(inner) == len(depth_keys) else inner,
        pos_grid=list(_square_grid(backbone['patch_pos'].shape[1] - 1)),
    )
    out = OrderedDict((f'backbone.{k}', v) for k, v in backbone.items())
    for key, value in head.items():
        out['head.fc.' + key.split('.')[-1]] = value
    return out, meta


def _square_grid(num_tokens: int) -> Tuple[int, int]:
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise CheckpointFormatError(f'position embedding with {num_tokens} tokens is not a '
                                    f'square grid; cannot tell its shape')
    return side, side


def load_pretrained(model: torch.nn.Module, filename: str, prefix: Optional[str] = None,
                    map_location: str = 'cpu') -> None:
    """Load a checkpoint into a :class:`TNT` strictly.

    Accepts a converted checkpoint, a full detector / segmentor / classifier checkpoint whose
    TNT sits under ``backbone.`` (or under ``prefix``), or a raw official / timm / mmpretrain
    one (converted in memory). Tolerated, and logged: keys the configuration does not use
    (the final norm without ``out_type='cls_token'``, blocks after the last ``out_indices``,
    the classifier), pyramid layers absent from a classification checkpoint (kept at their
    initialisation), and a position-embedding grid that differs from the model's (resampled).
    Anything else (missing or unexpected keys, shape mismatches, another layout) raises.
    """
    from tnt_mm.engine.checkpoint import load_checkpoint_safely
    checkpoint = load_checkpoint_safely(filename, map_location=map_location)
    state = unwrap_state_dict(checkpoint)
    meta = checkpoint.get('meta', {}) if isinstance(checkpoint, dict) else {}
    if prefix is None and not any(k.startswith('backbone.') for k in state):
        try:
            fmt = detect_format(state)
        except CheckpointFormatError as exc:
            raise CheckpointFormatError(f'{filename}: {exc}') from None
        if fmt != 'tnt_mm':
            print_log(f'{filename}: converting a {fmt} TNT checkpoint in memory', 'current')
            state, meta = convert_state_dict(state)
    prefix = 'backbone.' if prefix is None else (prefix if prefix.endswith('.') else prefix + '.')
    others = sorted(k for k in state if not k.startswith(prefix))
    state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not state:
        raise KeyError(f'{filename} has no keys under the prefix "{prefix}"; found '
                       f'{_describe(dict.fromkeys(others, None))}')

    layout = meta.get('layout') if isinstance(meta, dict) else None
    if layout is not None and layout != model.layout:
        raise ValueError(f'{filename} holds a TNT of layout {layout!r} but the model was built '
                         f'with layout={model.layout!r}; build it with layout={layout!r}')

    saved_se = meta.get('with_se') if isinstance(meta, dict) else None
    if saved_se is not None and saved_se != model.with_se:
        raise ValueError(f'{filename} holds a TNT saved with_se={saved_se}; build it with '
                         f'with_se={saved_se}')

    own = model.state_dict()
    notes = []
    if 'patch_pos' in state and state['patch_pos'].shape != own['patch_pos'].shape:
        old = state['patch_pos']
        grid = tuple(meta.get('pos_grid') or _square_grid(old.shape[1] - model.num_prefix_tokens))
        state['patch_pos'] = resample_pos_embed(old, grid, model.pos_grid, model.num_prefix_tokens)
        notes.append(f'patch_pos resampled from {grid[0]}x{grid[1]} to '
                     f'{model.pos_grid[0]}x{model.pos_grid[1]}')
    if 'pixel_pos' in state and state['pixel_pos'].shape != own['pixel_pos'].shape \
            and state['pixel_pos'].shape[-1] == own['pixel_pos'].shape[-1]:
        old_grid = _square_grid(state['pixel_pos'].shape[1])
        new_grid = _square_grid(own['pixel_pos'].shape[1])
        state['pixel_pos'] = resample_pos_embed(state['pixel_pos'], old_grid, new_grid)
        notes.append(f'pixel_pos resampled from {old_grid} to {new_grid}')

    unused = sorted(k for k in state if k not in own and model.is_unbuilt_key(k))
    unexpected = sorted(k for k in state if k not in own and not model.is_unbuilt_key(k))
    fresh = sorted(k for k in own if k not in state and k.startswith('pyramid.'))
    missing = sorted(k for k in own if k not in state and not k.startswith('pyramid.'))
    mismatched = [f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}'
                  for k in sorted(set(state) & set(own)) if state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        lines = [f'{filename} does not match this TNT ({model.arch_settings}, '
                 f'layout={model.layout!r}):']
        if missing:
            lines.append(f'  missing from the checkpoint ({len(missing)}): {missing}')
        if unexpected:
            lines.append(f'  unexpected in the checkpoint ({len(unexpected)}): {unexpected}')
        if mismatched:
            lines.append(f'  shape mismatches ({len(mismatched)}): {mismatched}')
        raise RuntimeError('\n'.join(lines))

    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    notes.append(f'loaded {len(state) - len(unused)} tensors from {filename}')
    if unused:
        notes.append(f'not used by this configuration: {_summarise(unused)}')
    if others:
        notes.append(f'outside "{prefix}", ignored: {_summarise(others)}')
    if fresh:
        notes.append(f'not in the checkpoint, kept at initialisation: {_summarise(fresh)}')
    print_log('TNT: ' + '; '.join(notes), 'current')


def _summarise(keys) -> str:
    groups = sorted({re.sub(r'\.(weight|bias)$', '', k).split('.')[0] for k in keys})
    return f'{len(keys)} tensors ({", ".join(groups)})'
