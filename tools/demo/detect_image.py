#!/usr/bin/env python
"""Detect objects in images with a tnt_mm detection config and a checkpoint; draw a summary.

    python tools/demo/detect_image.py configs/demo/det_shapes.py work_dirs/demo_det/epoch_6.pth \
        data/shapes_coco/val2017/00000[1-8].png --out work_dirs/demo_det/predictions.png

Inference goes through mmdet's own ``DetInferencer`` (the config's test pipeline, then the
model). The picture shows, for display only, the boxes above ``--score-thr`` after a
class-agnostic suppression of duplicates (IoU above ``--display-iou``: one object, one box, the
best scoring); the metrics of ``tools/test.py`` stay mmdet's. Each image is enlarged to a short
side of at least 256 pixels, labels carry class and score, and a legend maps colours to classes.
The boxes drawn are also printed.
"""
import argparse
import os.path as osp

import numpy as np
import torch
from PIL import Image
from torchvision.ops import nms

import tnt_mm  # noqa: F401  (registers the backbone before the config is built)
from tnt_mm.utils import drawing
from tnt_mm.utils.cli import add_image_tool_args, check_image_tool_args, run_cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    add_image_tool_args(parser, 'detection (mmdet)', columns=4)
    parser.add_argument('--score-thr', type=float, default=0.5,
                        help='draw and print boxes above this score (default 0.5)')
    parser.add_argument('--display-iou', type=float, default=0.5,
                        help='boxes overlapping a better one by more than this IoU are not '
                        'drawn, whatever their class (default 0.5; 1 draws all)')
    args = parser.parse_args(argv)
    if not 0 <= args.score_thr <= 1 or not 0 < args.display_iou <= 1:
        parser.error(f'--score-thr {args.score_thr} must be in [0, 1] and --display-iou '
                     f'{args.display_iou} in (0, 1]')
    return args


def boxes_to_draw(prediction: dict, score_thr: float, iou: float):
    """(boxes, labels, scores) above ``score_thr``, without the boxes that overlap a higher
    scoring one of any class by more than ``iou``, best first."""
    boxes = torch.as_tensor(np.asarray(prediction['bboxes'], dtype=np.float32)).reshape(-1, 4)
    scores = torch.as_tensor(np.asarray(prediction['scores'], dtype=np.float32))
    labels = torch.as_tensor(np.asarray(prediction['labels'], dtype=np.int64))
    above = scores >= score_thr
    boxes, scores, labels = boxes[above], scores[above], labels[above]
    keep = nms(boxes, scores, iou) if iou < 1 else torch.argsort(scores, descending=True)
    return boxes[keep].numpy(), labels[keep].tolist(), scores[keep].tolist(), int(above.sum())


def main(argv=None) -> dict:
    args = parse_args(argv)
    check_image_tool_args(args)
    from mmdet.apis import DetInferencer
    inferencer = DetInferencer(model=args.config, weights=args.checkpoint, device=args.device,
                               show_progress=False)
    meta = inferencer.model.dataset_meta
    classes = meta['classes']
    colors = drawing.class_colors(len(classes))
    result = inferencer(args.images, no_save_vis=True, no_save_pred=True)
    tiles = []
    for path, prediction in zip(args.images, result['predictions']):
        boxes, labels, scores, above = boxes_to_draw(prediction, args.score_thr,
                                                     args.display_iou)
        print(f'{path}: {len(labels)} boxes drawn ({above} with score >= {args.score_thr}, '
              f'{above - len(labels)} duplicates not drawn)')
        for box, cls, score in zip(boxes, labels, scores):
            print(f'  {classes[cls]:>10s} {score:.2f} ' + ' '.join(f'{v:.0f}' for v in box))
        image, scale = drawing.upscale(Image.open(path).convert('RGB'),
                                       resample=Image.Resampling.BICUBIC)
        tile = drawing.draw_boxes(image, boxes, labels, scores, classes, colors, scale)
        tiles.append(drawing.caption(tile, [(osp.basename(path), (0, 0, 0))]))
    body = drawing.grid(tiles, args.columns)
    picture = drawing.compose(
        body, f'{osp.basename(args.config)}: boxes with score >= {args.score_thr}; overlapping '
        f'duplicates (IoU > {args.display_iou:g}, any class) not drawn',
        drawing.legend(classes, colors, body.width))
    drawing.save_picture(picture, args.out)
    return result


if __name__ == '__main__':
    run_cli(main)
