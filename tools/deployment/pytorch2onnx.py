#!/usr/bin/env python
"""Export a tnt_mm config (and checkpoint) to ONNX; optionally check it in ONNX Runtime.

    python tools/deployment/pytorch2onnx.py configs/tnt_s_in1k.py CKPT --shape 224 --out tnt_s.onnx --verify
    python tools/deployment/pytorch2onnx.py configs/faster_rcnn_tnt_s_fpn.py CKPT \\
        --shape 800 1216 --out faster_rcnn.onnx --dynamic --verify
    python tools/deployment/pytorch2onnx.py configs/upernet_tnt_s_ade20k.py --part backbone \\
        --shape 512 --out tnt_s_pyramid.onnx

What is exported is the model's tensor path (``tnt_mm/deployment/onnx_export.py``): logits of a
classifier, a segmentor's decode-head logits, a two-stage detector's FPN levels and RPN outputs
(NMS, RoIAlign and the RoI heads are left out), or with ``--part backbone`` the TNT pyramid. The
input is named ``inputs``: a float32 batch normalised as the config's data preprocessor does
(mean, std and channel order are printed). Without a checkpoint the weights are random, which
is enough to check the export.

``--verify`` runs the file in ONNX Runtime and PyTorch on random inputs at the export size and,
with ``--dynamic``, at a second size with another batch; it prints the largest difference and
exits with status 1 when it is above ``--atol`` (1e-4).
"""
import argparse
import os
import time
import warnings

from tnt_mm.utils.cli import UsageError, UserError, add_debug_arg, require_file, run_cli

DEFAULT_ATOL = 1e-4


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', nargs='?', help='checkpoint to export (random weights '
                        'if omitted)')
    parser.add_argument('--shape', type=int, nargs='+', required=True,
                        help='input size H [W] the graph is exported at')
    parser.add_argument('--out', required=True, help='the .onnx file to write')
    parser.add_argument('--part', choices=('model', 'backbone'), default='model',
                        help='export the whole tensor path (default) or the TNT backbone alone')
    parser.add_argument('--batch', type=int, default=1, help='batch size (default 1)')
    parser.add_argument('--dynamic', action='store_true', help='free batch, height and width '
                        '(height and width from 33)')
    parser.add_argument('--verify', action='store_true', help='compare with PyTorch in ONNX '
                        'Runtime and fail above --atol')
    parser.add_argument('--atol', type=float, default=DEFAULT_ATOL,
                        help=f'largest allowed absolute difference (default {DEFAULT_ATOL})')
    parser.add_argument('--opset', type=int, help='ONNX opset (default: the exporter\'s)')
    add_debug_arg(parser)
    args = parser.parse_args(argv)
    if len(args.shape) > 2:
        parser.error(f'--shape takes H or H W, got {len(args.shape)} numbers')
    args.height, args.width = (args.shape * 2)[:2]
    if args.batch < 1:
        parser.error(f'--batch {args.batch}: must be at least 1')
    if not args.out.endswith('.onnx'):
        parser.error(f'--out {args.out}: name the file *.onnx')
    return args


def verify_shapes(args):
    shapes = [(args.batch, args.height, args.width)]
    if args.dynamic:  # another batch, and sizes that are not multiples of the patch size
        shapes.append((args.batch + 1, args.height + 24, max(args.width - 8, 33)))
    return shapes


def main(argv=None) -> None:
    args = parse_args(argv)
    require_file(args.config, 'config')
    if args.checkpoint:
        require_file(args.checkpoint, 'checkpoint')
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
        if args.verify:
            import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise UserError(f'{exc.name} is not installed: pip install -e .[deploy] (make install '
                        f'does it)') from None
    # the exporter's own progress lines and the libraries' deprecation warnings are not ours
    warnings.filterwarnings('ignore')
    from tnt_mm.deployment import ExportError, build_from_config, export_onnx, verify_onnx

    try:
        module, preprocess = build_from_config(args.config, args.checkpoint, args.part)
        start = time.time()
        export_onnx(module, args.out, args.height, args.width, batch=args.batch,
                    dynamic=args.dynamic, opset=args.opset)
    except ExportError as exc:
        raise UsageError(str(exc)) from None
    size_mb = os.path.getsize(args.out) / 2 ** 20
    shape = ('(batch, 3, height, width), height and width >= 33' if args.dynamic
             else f'({args.batch}, 3, {args.height}, {args.width})')
    print(f'wrote {args.out} ({size_mb:.1f} MB) in {time.time() - start:.0f} s')
    print(f'  input  inputs: float32 {shape}, normalised as the config\'s data preprocessor: '
          + ', '.join(f'{k}={v}' for k, v in preprocess.items()))
    print(f'  outputs: {", ".join(module.output_names)}')
    if not args.verify:
        return
    failed = False
    for result in verify_onnx(args.out, module, verify_shapes(args)):
        ok = result['max_abs_diff'] <= args.atol
        failed |= not ok
        print(f'verify {result["shape"]}: max |onnxruntime - pytorch| = '
              f'{result["max_abs_diff"]:.2e} (in {result["output"]}), '
              f'{"ok" if ok else "ABOVE"} atol {args.atol:g}')
    if failed:
        raise UserError(f'{args.out} differs from PyTorch by more than --atol {args.atol:g}')


if __name__ == '__main__':
    run_cli(main)
