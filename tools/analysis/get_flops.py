#!/usr/bin/env python
"""Print TNT parameter and FLOP (multiply-accumulate) counts next to the paper's.

    python tools/analysis/get_flops.py                       # the classifier table at 224
    python tools/analysis/get_flops.py --arch small --shape 800 1216 --out-type pyramid
    python tools/analysis/get_flops.py --config configs/faster_rcnn_tnt_s_fpn.py --shape 800 1216

Counts come from ``mmengine.analysis`` (see ``tnt_mm/utils/complexity.py`` for the two
adjustments that make them the paper's convention).
"""
import argparse

import torch

from tnt_mm.utils.cli import add_debug_arg, require_file, run_cli
from tnt_mm.utils.complexity import (complexity_table, config_complexity, count_macs,
                                     count_params, format_table)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--config', help='measure the whole model of a detection, segmentation '
                        'or classification config (one forward at --shape)')
    parser.add_argument('--arch', help='measure one backbone (tiny/small/base) instead of the '
                        'paper table')
    parser.add_argument('--shape', type=int, nargs='+', default=[224],
                        help='input size: H [W]. Defaults to 224')
    parser.add_argument('--out-type', default='pyramid', choices=('pyramid', 'featmap',
                                                                 'cls_token'))
    add_debug_arg(parser)
    args = parser.parse_args(argv)
    height, width = (args.shape * 2)[:2]
    if args.config:
        require_file(args.config, 'config')
        params, macs = config_complexity(args.config, height, width)
        print(f'{args.config}, input {height}x{width}: {params / 1e6:.2f}M params, '
              f'{macs / 1e9:.1f} GMACs')
        return
    if args.arch is None:
        if height != width:
            parser.error('the paper table is measured on square inputs; give one --shape')
        print(f'TNT classifiers (ImageNet head, 1000 classes), input {height}x{width}:')
        print(format_table(complexity_table(height), height))
        return
    import tnt_mm  # noqa: F401
    from tnt_mm.models import TNT
    model = TNT(arch=args.arch, out_type=args.out_type)
    macs = count_macs(model, (torch.zeros(1, 3, height, width),))
    print(f'TNT-{args.arch} backbone, out_type={args.out_type!r}, input {height}x{width}: '
          f'{count_params(model) / 1e6:.2f}M params, {macs / 1e9:.2f} GMACs')


if __name__ == '__main__':
    run_cli(main)
