#!/usr/bin/env python
"""Export a tnt_mm config (and checkpoint) to ONNX; optionally check it in ONNX Runtime.

    python tools/deployment/pytorch2onnx.py configs/tnt_s_in1k.py CKPT --shape 224 --out tnt_s.onnx --verify
    python tools/deployment/pytorch2onnx.py configs/faster_rcnn_tnt_s_fpn.py CKPT \\
        --shape 800 1216 --out faster_rcnn.onnx --dynamic --verify --images a.jpg b.jpg
    python tools/deployment/pytorch2onnx.py configs/upernet_tnt_s_ade20k.py --part backbone \\
        --shape 512 --out tnt_s_pyramid.onnx

What is exported (``tnt_mm/deployment/``): by default (``--part all``) the whole model. A
detector (Faster R-CNN, Mask R-CNN, DETR) takes one image and gives its detections, ``boxes``
(N, 4) in input pixels, ``scores``, ``labels`` and, for Mask R-CNN, ``masks`` (N, 28, 28) at the
RoI size; the config's test_cfg is baked in and printed. A classifier gives logits, a segmentor
its decode-head logits. ``--part model`` is a detector's tensor path (FPN levels and RPN
outputs), ``--part backbone`` the TNT pyramid. The input is named ``inputs``: float32,
normalised as the config's data preprocessor does, not padded; the file's metadata records the
normalisation, the test resize and the class names, which ``tools/deployment/onnx_infer.py``
applies. Without a checkpoint the weights are random, which is enough to check the export.

``--verify`` runs the file in ONNX Runtime and PyTorch on random inputs at the export size and,
with ``--dynamic``, at a second size (and batch); it prints the largest difference (relative to
an output's magnitude above 1) and exits with status 1 when it is above ``--atol`` (1e-4). With
``--images``, a detector's detections on those images are also compared with mmdet's
``DetInferencer``: the same count and labels, boxes within 1 px, scores within 1e-3, mask IoU
at least 0.98.
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
    parser.add_argument('--part', choices=('all', 'model', 'backbone'), default='all',
                        help='the whole model, detectors with post-processing (default); a '
                        'detector\'s tensor path (model); or the TNT backbone alone')
    parser.add_argument('--batch', type=int, default=1, help='batch size (default 1; a whole '
                        'detector takes one image)')
    parser.add_argument('--dynamic', action='store_true', help='free batch, height and width '
                        '(height and width from 33; a whole detector\'s batch stays 1)')
    parser.add_argument('--verify', action='store_true', help='compare with PyTorch in ONNX '
                        'Runtime and fail above --atol')
    parser.add_argument('--time', type=int, metavar='RUNS', default=0,
                        help='time ONNX Runtime against eager PyTorch on the CPU at the export '
                        'size: median and range of RUNS forwards each')
    parser.add_argument('--images', nargs='+', default=[],
                        help='with --verify, compare a detector\'s detections on these images '
                        'with mmdet\'s DetInferencer')
    parser.add_argument('--atol', type=float, default=DEFAULT_ATOL,
                        help=f'largest allowed difference, relative to an output\'s magnitude '
                        f'where that is above 1 (default {DEFAULT_ATOL})')
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
    if args.images and not (args.verify and args.checkpoint):
        parser.error('--images compares the detections of CHECKPOINT\'s weights for --verify: '
                     'give a checkpoint and --verify')
    return args


def verify_shapes(args, single_image: bool):
    shapes = [(args.batch, args.height, args.width)]
    if args.dynamic:  # another batch, and sizes that are not multiples of the patch size
        batch = args.batch if single_image else args.batch + 1
        shapes.append((batch, args.height + 24, max(args.width - 8, 33)))
    return shapes


def main(argv=None) -> None:
    args = parse_args(argv)
    require_file(args.config, 'config')
    if args.checkpoint:
        require_file(args.checkpoint, 'checkpoint')
    for image in args.images:
        require_file(image, 'image')
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
    from tnt_mm.deployment.onnx_export import is_whole_detector

    try:
        module, metadata = build_from_config(args.config, args.checkpoint, args.part)
        if args.images and not is_whole_detector(module):
            raise ExportError('--images compares detections: it needs a detector exported '
                              'whole (--part all)')
        start = time.time()
        export_onnx(module, args.out, args.height, args.width, batch=args.batch,
                    dynamic=args.dynamic, opset=args.opset, metadata=metadata)
    except ExportError as exc:
        raise UsageError(str(exc)) from None
    print_summary(args, module, metadata, time.time() - start)
    if args.time:
        print_times(args, module)
    if not args.verify:
        return
    failed = False
    shapes = verify_shapes(args, is_whole_detector(module))
    for result in verify_onnx(args.out, module, shapes):
        ok = result['max_diff'] <= args.atol
        failed |= not ok
        print(f'verify {result["shape"]}: max |onnxruntime - pytorch| / max(1, |pytorch|) = '
              f'{result["max_diff"]:.2e} (in {result["output"]}), '
              f'{"ok" if ok else "ABOVE"} atol {args.atol:g}')
    if args.images:
        failed |= not compare_images(args)
    if failed:
        raise UserError(f'{args.out} differs from PyTorch by more than --atol {args.atol:g}'
                        + (' or from DetInferencer\'s detections' if args.images else ''))


def print_summary(args, module, metadata: dict, seconds: float) -> None:
    from tnt_mm.deployment.onnx_export import is_whole_detector

    size_mb = os.path.getsize(args.out) / 2 ** 20
    if args.dynamic:
        batch = 1 if is_whole_detector(module) else 'batch'
        shape = f'({batch}, 3, height, width), height and width >= 33'
    else:
        shape = f'({args.batch}, 3, {args.height}, {args.width})'
    inputs = metadata['input']
    print(f'wrote {args.out} ({size_mb:.1f} MB) in {seconds:.0f} s')
    print(f'  input  inputs: float32 {shape}, {"RGB" if inputs["rgb"] else "BGR"}, normalised '
          f'as the config\'s data preprocessor: mean={inputs["mean"]}, std={inputs["std"]}'
          + (f'; test resize {metadata["resize"]}' if metadata.get('resize') else ''))
    print(f'  outputs: {", ".join(module.output_names)}')
    if metadata.get('test_cfg'):
        print('  test_cfg in the graph: '
              + ', '.join(f'{k}={v}' for k, v in metadata['test_cfg'].items()))


def print_times(args, module) -> None:
    import statistics

    import torch

    from tnt_mm.deployment.onnx_export import time_onnx

    times = time_onnx(args.out, module, (args.batch, args.height, args.width), args.time)
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f'time ({args.batch}, 3, {args.height}, {args.width}), {torch.get_num_threads()} '
          f'threads, {args.time} runs: ' + ', '.join(
              f'{name} {medians[name] * 1e3:.1f} ms ({min(values) * 1e3:.1f}-'
              f'{max(values) * 1e3:.1f})' for name, values in times.items())
          + f'; onnxruntime / pytorch = {medians["onnxruntime"] / medians["pytorch"]:.2f}')


def compare_images(args) -> bool:
    """The file's detections against DetInferencer's on ``args.images``; True if all agree."""
    from tnt_mm.deployment.compare import agrees, compare_with_mmdet

    ok = True
    for report in compare_with_mmdet(args.out, args.config, args.checkpoint, args.images):
        ok &= agrees(report)
        mask = (f', min mask IoU {report["min_mask_iou"]:.3f}'
                if report['min_mask_iou'] is not None else '')
        print(f'verify {os.path.basename(report["image"])}: {report["got"]} detections, '
              f'DetInferencer {report["expected"]}, unmatched {len(report["unmatched"])}, '
              f'max box diff {report["max_box_diff"]:.1e} px, max score diff '
              f'{report["max_score_diff"]:.1e}{mask}, {"ok" if agrees(report) else "DIFFERENT"}')
    return ok


if __name__ == '__main__':
    run_cli(main)
