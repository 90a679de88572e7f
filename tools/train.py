#!/usr/bin/env python
"""Train with a tnt_mm config (classification, detection or segmentation).

    python tools/train.py configs/tnt_s_in1k.py [--work-dir DIR] [--resume [CKPT]] [--amp]
    bash tools/dist_train.sh configs/tnt_s_in1k.py 8          # torchrun, 8 GPUs

The config's ``default_scope`` (mmpretrain / mmdet / mmseg) decides the task; mmengine's Runner
does the rest. Checkpoints are written so that they load with ``weights_only=True``
(``tnt_mm.SafeCheckpointHook``, which every config inherits from configs/_base_/tnt_runtime.py).
A mistake in the arguments, the data or the checkpoints prints one ``error:`` line (``--debug``
shows the traceback).

SIGTERM or SIGUSR1 (cluster preemption) stops the run after the current iteration with a
checkpoint at that iteration (``tnt_mm.PreemptionHook``) and exit status 75; ``--resume`` then
continues from the next iteration, inside the epoch, as if never stopped.
"""
import argparse
import sys

from mmengine.config import Config

from tnt_mm.engine import PREEMPTED_EXIT_CODE, TrainingPreempted
from tnt_mm.engine.checkpoint import safe_checkpoint_loading
from tnt_mm.utils.cli import UsageError, require_file, run_cli
from tnt_mm.utils.config import (add_runner_args, check_checkpoints, export_local_rank,
                                 load_config)
from tnt_mm.utils.data_check import check_data
from tnt_mm.utils.dist import build_runner, exit_distributed


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a model with a tnt_mm config')
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: ./work_dirs/<config name>)')
    parser.add_argument('--resume', nargs='?', const='auto', metavar='CKPT',
                        help='resume from CKPT, or from the latest checkpoint of the work dir '
                        'when no path is given')
    parser.add_argument('--save-every-minutes', type=float, metavar='N',
                        help='also save a checkpoint every N minutes, keeping the latest (for '
                        'clusters that kill without a warning signal)')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate by the real total batch size '
                        '(auto_scale_lr.base_batch_size in the config)')
    add_runner_args(parser)
    args = parser.parse_args(argv)
    if args.save_every_minutes is not None and args.save_every_minutes <= 0:
        parser.error(f'--save-every-minutes {args.save_every_minutes}: must be positive')
    export_local_rank(args)
    return args


def build_config(args) -> Config:
    cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg:
            raise UsageError(f'--auto-scale-lr: {args.config} has no auto_scale_lr entry')
        cfg.auto_scale_lr.enable = True
    if args.save_every_minutes is not None:
        hooks = [h for h in cfg.get('custom_hooks') or []
                 if str(h.get('type', '')).endswith('PreemptionHook')]
        if not hooks:
            raise UsageError(f'--save-every-minutes: {args.config} has no tnt_mm.PreemptionHook '
                             f'(inherit configs/_base_/tnt_runtime.py)')
        hooks[0]['interval_minutes'] = args.save_every_minutes
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume:
        cfg.resume, cfg.load_from = True, args.resume
    return cfg


def main(argv=None) -> None:
    # load_from, --resume and Pretrained weights: local files weights-only, with clear refusals
    with safe_checkpoint_loading():
        run_training(parse_args(argv))


def run_training(args) -> None:
    if args.resume and args.resume != 'auto':
        require_file(args.resume, '--resume')
    cfg = build_config(args)
    # before the Runner spends minutes building everything
    check_checkpoints(cfg)
    check_data(cfg, ('train', 'val'))
    runner = build_runner(cfg)
    try:
        runner.train()
    except TrainingPreempted as stop:
        if runner.rank == 0:
            print(f'preempted: {stop}\nresume with: python tools/train.py {args.config} '
                  f'--work-dir {cfg.work_dir} --resume (or the same launcher with --resume)',
                  file=sys.stderr)
        exit_distributed(PREEMPTED_EXIT_CODE)
        sys.exit(PREEMPTED_EXIT_CODE)
    exit_distributed()


if __name__ == '__main__':
    run_cli(main)
