#!/usr/bin/env python
"""Segment images with a tnt_mm segmentation config and a checkpoint; draw a summary picture.

    python tools/demo/segment_images.py configs/demo/seg_shapes_upernet.py \
        work_dirs/demo_seg/iter_1600.pth data/shapes_ade/images/validation/00000[1-8].jpg \
        --out work_dirs/demo_seg/predictions.png

Each tile shows the image, its ground truth (found in the ADE20K layout: ``images/<split>/X.jpg``
-> ``annotations/<split>/X.png``; left out when there is none) and the prediction, enlarged to a
short side of at least 256 pixels, with a legend of the classes' colours. Inference goes through
mmseg's ``init_model`` / ``inference_model`` (the config's test pipeline).
"""
import argparse
import os.path as osp
from typing import Optional

import numpy as np
from PIL import Image

import tnt_mm  # noqa: F401  (registers the backbone before the config is built)
from tnt_mm.utils import drawing
from tnt_mm.utils.cli import add_image_tool_args, check_image_tool_args, run_cli

IGNORED = (0, 0, 0)  # pixels without a label (255), e.g. the background with reduce_zero_label


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    add_image_tool_args(parser, 'segmentation (mmseg)', columns=2)
    return parser.parse_args(argv)


def ground_truth_path(image_path: str) -> Optional[str]:
    """``.../images/<split>/X.jpg`` -> ``.../annotations/<split>/X.png``, if that file exists."""
    split_dir = osp.dirname(image_path)
    root = osp.dirname(osp.dirname(split_dir))
    candidate = osp.join(root, 'annotations', osp.basename(split_dir),
                         osp.splitext(osp.basename(image_path))[0] + '.png')
    return candidate if osp.basename(osp.dirname(split_dir)) == 'images' and \
        osp.isfile(candidate) else None


def colorize(labels: np.ndarray, colors) -> Image.Image:
    """(H, W) class indices (255: no label) -> RGB."""
    table = np.zeros((256, 3), dtype=np.uint8)
    table[:] = IGNORED
    table[:len(colors)] = np.asarray(colors, dtype=np.uint8)
    return Image.fromarray(table[labels.astype(np.uint8)])


def main(argv=None) -> list:
    args = parse_args(argv)
    check_image_tool_args(args)
    from mmseg.apis import inference_model, init_model
    model = init_model(args.config, args.checkpoint, device=args.device)
    meta = model.dataset_meta
    classes = list(meta['classes'])
    colors = drawing.class_colors(len(classes), meta.get('palette'))
    reduce_zero_label = bool(model.cfg.test_dataloader.dataset.get('reduce_zero_label', False))
    text_font = drawing.font(16)
    tiles, predictions, ignored_shown = [], [], False
    for path in args.images:
        predicted = inference_model(model, path).pred_sem_seg.data[0].cpu().numpy()
        predictions.append(predicted)
        panels = [(Image.open(path).convert('RGB'), 'image')]
        truth_path = ground_truth_path(path)
        if truth_path is not None:
            truth = np.asarray(Image.open(truth_path)).astype(np.int64)
            if reduce_zero_label:  # as mmseg's LoadAnnotations: 0 -> 255, k -> k - 1
                truth = np.where(truth == 0, 255, truth - 1)
            ignored_shown |= bool((truth == 255).any())
            panels.append((colorize(truth, colors), 'ground truth'))
        panels.append((colorize(predicted, colors), 'prediction'))
        enlarged = []
        for panel, title in panels:
            resample = Image.Resampling.BICUBIC if title == 'image' else Image.Resampling.NEAREST
            enlarged.append(drawing.caption(drawing.upscale(panel, resample=resample)[0],
                                            [(title, (0, 0, 0))], text_font))
        tiles.append(drawing.caption(drawing.side_by_side(enlarged),
                                     [(osp.basename(path), (90, 90, 90))], text_font))
    body = drawing.grid(tiles, args.columns, gap=24)
    names, swatches = classes, colors
    if ignored_shown:
        names, swatches = classes + ['no label (ignored)'], colors + [IGNORED]
    picture = drawing.compose(body, f'{osp.basename(args.config)}: image, ground truth, '
                              f'prediction', drawing.legend(names, swatches, body.width))
    drawing.save_picture(picture, args.out)
    return predictions


if __name__ == '__main__':
    run_cli(main)
