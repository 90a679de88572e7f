#!/usr/bin/env python
"""Detect objects in images with a tnt_mm detection config and a checkpoint; draw the boxes.

    python tools/demo/detect_image.py configs/demo/det_shapes.py work_dirs/demo_det/epoch_12.pth \
        data/shapes_coco/val2017/000001.png data/shapes_coco/val2017/000002.png \
        --out work_dirs/demo_det/predictions.png

Inference goes through mmdet's own ``DetInferencer`` (the config's test pipeline, then the
model); mmdet's visualiser draws each image, and the drawings are tiled into one PNG. The
detections are also printed, one line per box above ``--score-thr``.
"""
import argparse
import os
import os.path as osp
from typing import List

import numpy as np
from PIL import Image

import tnt_mm  # noqa: F401  (registers the backbone before the config is built)
from tnt_mm.utils.cli import add_debug_arg, require_file, run_cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='detection config (mmdet default scope)')
    parser.add_argument('checkpoint', help='checkpoint written by tools/train.py')
    parser.add_argument('images', nargs='+', help='image files')
    parser.add_argument('--out', default='predictions.png', help='tiled picture to write')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='draw and print boxes above this score')
    parser.add_argument('--columns', type=int, default=4, help='images per row of the tiling')
    parser.add_argument('--device', default='cpu')
    add_debug_arg(parser)
    return parser.parse_args(argv)


def tile(images: List[np.ndarray], columns: int) -> np.ndarray:
    """RGB images of any sizes -> one grid, each cell as large as the largest image."""
    height = max(image.shape[0] for image in images)
    width = max(image.shape[1] for image in images)
    rows = -(-len(images) // columns)
    columns = min(columns, len(images))
    grid = np.full((rows * height, columns * width, 3), 255, dtype=np.uint8)
    for index, image in enumerate(images):
        row, col = divmod(index, columns)
        grid[row * height:row * height + image.shape[0],
             col * width:col * width + image.shape[1]] = image
    return grid


def main(argv=None) -> dict:
    args = parse_args(argv)
    require_file(args.config, 'config')
    require_file(args.checkpoint, 'checkpoint')
    for path in args.images:
        require_file(path, 'image')
    from mmdet.apis import DetInferencer
    inferencer = DetInferencer(model=args.config, weights=args.checkpoint, device=args.device,
                               show_progress=False)
    classes = inferencer.model.dataset_meta['classes']
    result = inferencer(args.images, return_vis=True, pred_score_thr=args.score_thr,
                        no_save_vis=True)
    for path, prediction in zip(args.images, result['predictions']):
        kept = [(label, score, box) for label, score, box in
                zip(prediction['labels'], prediction['scores'], prediction['bboxes'])
                if score >= args.score_thr]
        print(f'{path}: {len(kept)} boxes with score >= {args.score_thr}')
        for label, score, box in kept:
            print(f'  {classes[label]:>10s} {score:.2f} ' + ' '.join(f'{v:.0f}' for v in box))
    out_dir = osp.dirname(osp.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    # written under a temporary name and renamed: no half-written picture is left behind
    partial = args.out + '.partial.png'
    Image.fromarray(tile(result['visualization'], args.columns)).save(partial)
    os.replace(partial, args.out)
    print(f'wrote {args.out}')
    return result


if __name__ == '__main__':
    run_cli(main)
