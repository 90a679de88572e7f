"""Config set-up shared by the command-line tools."""
import os
import os.path as osp
from typing import Optional

from mmengine.config import Config, DictAction


def load_config(path: str, cfg_options: Optional[dict] = None, work_dir: Optional[str] = None,
                launcher: str = 'none') -> Config:
    """Read a config the way every tool does: apply ``--cfg-options``, pick the work dir
    (``./work_dirs/<config name>`` by default), make sure the checkpoints written or read
    go through :class:`tnt_mm.engine.SafeCheckpointHook`, that a NaN or Inf loss stops
    training (:class:`tnt_mm.engine.CheckInvalidLossHook`), and that an image with the wrong
    channel count is named (:class:`tnt_mm.engine.CheckInputHook`)."""
    cfg = Config.fromfile(path)
    cfg.launcher = launcher
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.work_dir = work_dir or cfg.get('work_dir') or osp.join(
        './work_dirs', osp.splitext(osp.basename(path))[0])
    hooks = list(cfg.get('custom_hooks') or [])
    for name in ('SafeCheckpointHook', 'CheckInvalidLossHook', 'CheckInputHook'):
        if not any(str(h.get('type', '')).endswith(name) for h in hooks):
            hooks.append(dict(type=f'tnt_mm.{name}'))
    cfg.custom_hooks = hooks
    return cfg


def add_runner_args(parser) -> None:
    """The arguments every runner tool shares: ``--cfg-options``, ``--launcher`` and the
    ``--local_rank`` that older launchers pass (exported as ``LOCAL_RANK``, see
    :func:`export_local_rank`)."""
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. train_cfg.max_epochs=1')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def export_local_rank(args) -> None:
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
