#!/usr/bin/env python
"""Evaluate a checkpoint with a tnt_mm config: top-1/top-5, COCO AP or mIoU, by the config.

    python tools/test.py configs/tnt_s_in1k.py checkpoints/tnt_s_official.pth
    python tools/test.py CONFIG CKPT --out results.pkl --show-dir vis/

The metrics come from the config's evaluator (mmpretrain Accuracy, mmdet CocoMetric, mmseg
IoUMetric). ``--out`` is written to a temporary file and renamed when complete. A missing file or
a bad option prints one ``error:`` line (``--debug`` shows the traceback).
"""
import argparse
import numbers
import os
import os.path as osp

from mmengine.config import Config

from tnt_mm.engine.checkpoint import safe_checkpoint_loading
from tnt_mm.utils.cli import UsageError, require_file, run_cli
from tnt_mm.utils.config import add_runner_args, export_local_rank, load_config
from tnt_mm.utils.data_check import check_data
from tnt_mm.utils.dist import build_runner, exit_distributed


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Evaluate a checkpoint with a tnt_mm config')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint to evaluate')
    parser.add_argument('--work-dir', help='where the evaluation log goes')
    parser.add_argument('--out', help='also dump the predictions to this pickle file')
    parser.add_argument('--show-dir', help='draw predictions into this folder '
                        '(under the work dir)')
    add_runner_args(parser)
    args = parser.parse_args(argv)
    if args.out and not args.out.endswith(('.pkl', '.pickle')):
        parser.error(f'--out {args.out}: the predictions are dumped as a pickle; name the file '
                     f'*.pkl')
    export_local_rank(args)
    return args


def build_config(args) -> Config:
    cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    cfg.load_from = args.checkpoint
    if args.show_dir:
        visualization = cfg.default_hooks.get('visualization')
        if visualization is None:
            raise UsageError(f'--show-dir: {args.config} has no visualization hook')
        kind = str(visualization.get('type', ''))
        if 'Det' in kind:  # mmdet DetVisualizationHook
            visualization.update(draw=True, test_out_dir=args.show_dir)
        elif 'Seg' in kind:  # mmseg SegVisualizationHook draws through the visualizer
            visualization.update(draw=True, interval=1)  # every image, not one in 50 batches
            cfg.visualizer['save_dir'] = args.show_dir
            # mmseg names its visualizer 'visualizer'; a later runner in the same process would
            # get the instance built first, with that one's save_dir. Unnamed, the runner names
            # it after its run.
            cfg.visualizer.pop('name', None)
        else:  # mmpretrain VisualizationHook
            visualization.update(enable=True, out_dir=args.show_dir)
    return cfg


def main(argv=None) -> dict:
    # the checkpoint and Pretrained weights: local files weights-only, with clear refusals
    with safe_checkpoint_loading():
        return evaluate(parse_args(argv))


def evaluate(args) -> dict:
    cfg = build_config(args)
    require_file(args.checkpoint, 'checkpoint')  # before the Runner builds anything
    check_data(cfg, ('test',))
    runner = build_runner(cfg)
    if args.out:
        from mmengine.evaluator import DumpResults
        # written under a temporary name, renamed when complete (mmengine wants *.pkl)
        tmp = osp.splitext(args.out)[0] + '.partial.pkl'
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=tmp))
    metrics = runner.test()
    if runner.rank == 0:  # DumpResults writes on rank 0 only
        if args.out:
            os.replace(tmp, args.out)
        print(format_metrics(metrics))
    exit_distributed()
    return metrics


def format_metrics(metrics: dict) -> str:
    lines = ['| metric | value |', '|---|---|']
    # mmseg's values are numpy float32: format every real number, not only Python floats
    lines += [f'| {name} | {float(value):.4g} |' if isinstance(value, numbers.Real)
              and not isinstance(value, bool) else f'| {name} | {value} |'
              for name, value in metrics.items()]
    return '\n'.join(lines)


if __name__ == '__main__':
    run_cli(main)
