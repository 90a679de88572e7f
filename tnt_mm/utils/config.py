"""Config set-up shared by the command-line tools."""
import logging
import os
import os.path as osp
from typing import Iterator, Optional, Tuple

from mmengine.config import Config, DictAction
from mmengine.logging import print_log

from .cli import UsageError, UserError, add_debug_arg, require_file

# Every config inherits them from configs/_base_/tnt_runtime.py.
SAFETY_HOOKS = ('SafeCheckpointHook', 'CheckInvalidLossHook', 'CheckInputHook', 'PreemptionHook')
_MISSING = object()


def load_config(path: str, cfg_options: Optional[dict] = None, work_dir: Optional[str] = None,
                launcher: str = 'none') -> Config:
    """Read a config the way every tool does: apply ``--cfg-options`` and pick the work dir
    (``./work_dirs/<config name>`` by default). A missing or unreadable config, or a
    ``--cfg-options`` entry that cannot apply, raises a :class:`~tnt_mm.utils.cli.UserError`.

    The safety hooks (:class:`tnt_mm.engine.SafeCheckpointHook`, ``CheckInvalidLossHook``,
    ``CheckInputHook``) come from the config itself; a config without them gets a warning.
    """
    require_file(path, 'config')
    try:
        cfg = Config.fromfile(path)
    except SyntaxError as exc:  # mmengine's message names the file and the line
        raise UserError(str(exc)) from None
    cfg.launcher = launcher
    for key, value in (cfg_options or {}).items():
        merge_option(cfg, key, value)
    cfg.work_dir = work_dir or cfg.get('work_dir') or osp.join(
        './work_dirs', osp.splitext(osp.basename(path))[0])
    hooks = [str(hook.get('type', '')) for hook in cfg.get('custom_hooks') or []]
    missing = [name for name in SAFETY_HOOKS if not any(h.endswith(name) for h in hooks)]
    if missing:
        print_log(f'{path} lacks the hooks {missing}: inherit configs/_base_/tnt_runtime.py '
                  f'and keep its custom_hooks (custom_hooks = _base_.custom_hooks + [...])',
                  logger='current', level=logging.WARNING)
    return cfg


def _lookup(cfg, key: str):
    """The config's value at a dotted key (list items by index), or ``_MISSING``.

    Raises:
        ValueError: the key cannot exist (it goes through a number, or past a list's end).
    """
    node, parts = cfg, key.split('.')
    for i, part in enumerate(parts):
        where = '.'.join(parts[:i])
        if isinstance(node, (list, tuple)):
            if not (part.isdigit() and int(part) < len(node)):
                raise ValueError(f'{where} is a list of {len(node)} entries; {part} is not one')
            node = node[int(part)]
        elif hasattr(node, 'get'):  # Config, dict
            node = node.get(part, _MISSING)
            if node is _MISSING:
                break
        else:
            raise ValueError(f'{where} is {node!r}, which has no entry {part!r}')
    return node


def merge_option(cfg: Config, key: str, value) -> None:
    """Apply one ``--cfg-options KEY=VALUE``. A key that cannot be set, or a word where the
    config holds a number or a flag, raises :class:`~tnt_mm.utils.cli.UsageError`; a new key
    is allowed (mmengine adds it) with a warning, as it is often a typo."""
    try:
        old = _lookup(cfg, key)
        if isinstance(old, (bool, int, float)) and isinstance(value, str):
            raise ValueError(f'expected a number or True/False (the config has {old!r})')
        cfg.merge_from_dict({key: value})
    except (KeyError, TypeError, ValueError) as exc:
        reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise UsageError(f'--cfg-options {key}={value}: {reason}') from None
    if old is _MISSING:
        print_log(f'--cfg-options {key}: the config had no such key; it is added',
                  logger='current', level=logging.WARNING)


def _pretrained(node, where: str) -> Iterator[Tuple[str, str]]:
    """``(key, path)`` of every ``Pretrained`` init_cfg checkpoint under ``node``."""
    if isinstance(node, dict):
        if node.get('type') == 'Pretrained' and isinstance(node.get('checkpoint'), str):
            yield where, node['checkpoint']
        for key, value in node.items():
            yield from _pretrained(value, f'{where}.{key}')
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            yield from _pretrained(value, f'{where}.{index}')


def check_checkpoints(cfg: Config) -> None:
    """Before the Runner builds anything: the checkpoints that training reads exist
    (``load_from`` and the model's ``Pretrained`` init_cfgs).

    Raises:
        UserError: naming the config key, the path and the fix.
    """
    load_from = cfg.get('load_from')
    if load_from and is_local(load_from) and not osp.isfile(load_from):
        raise UserError(f'load_from: {load_from} does not exist')
    for where, path in _pretrained(cfg.get('model'), 'model'):
        if is_local(path) and not osp.isfile(path):
            raise UserError(
                f'{where}.checkpoint: {path} does not exist. Name the weights on the Hugging '
                f'Face Hub (hf-hub:timm/tnt_s_patch16_224.in1k), convert the official ones with '
                f'tools/model_converters/tnt2mm.py (README), or train from scratch with '
                f'--cfg-options {where}=None')


def is_local(path: str) -> bool:
    """Whether a checkpoint name is a local path (not a URL, ``trusted://`` or ``hf-hub:``)."""
    return '://' not in path and not path.startswith('hf-hub:')


class CfgOptionsAction(DictAction):
    """mmengine's ``DictAction``, with a malformed ``KEY=VALUE`` as a usage error naming it."""

    def __call__(self, parser, namespace, values, option_string=None):
        for item in values or []:
            try:
                if '=' not in item:
                    raise ValueError('expected KEY=VALUE')
                super().__call__(parser, namespace, [item], option_string)
            except (AssertionError, ValueError) as exc:  # e.g. unbalanced brackets
                raise UsageError(f'--cfg-options {item}: {exc}') from None


def add_runner_args(parser) -> None:
    """The arguments every runner tool shares: ``--cfg-options``, ``--launcher``, ``--debug``
    and the ``--local_rank`` that older launchers pass (exported as ``LOCAL_RANK``, see
    :func:`export_local_rank`)."""
    parser.add_argument('--cfg-options', nargs='+', action=CfgOptionsAction,
                        help='override config entries, e.g. train_cfg.max_epochs=1')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    add_debug_arg(parser)


def export_local_rank(args) -> None:
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
