#!/usr/bin/env python
"""Classify images with a tnt_mm classification config and a checkpoint; draw a summary picture.

    python tools/demo/classify_images.py configs/demo/cls_shapes.py \
        work_dirs/demo_cls/epoch_12.pth data/shapes_cls/val/*/val_0000[0-7].png \
        --out work_dirs/demo_cls/predictions.png

Each image is enlarged to a short side of at least 256 pixels and captioned with the predicted
class and score; when the image sits in a folder named after a class (the ImageNet layout), the
true class is shown too, and misclassified images get a red frame. Inference goes through
mmpretrain's ``ImageClassificationInferencer`` (the config's test pipeline).
"""
import argparse
import os.path as osp

from PIL import Image

import tnt_mm  # noqa: F401  (registers the backbone before the config is built)
from tnt_mm.utils import drawing
from tnt_mm.utils.cli import UsageError, add_image_tool_args, check_image_tool_args, run_cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    add_image_tool_args(parser, 'classification (mmpretrain)', columns=4)
    return parser.parse_args(argv)


def main(argv=None) -> list:
    args = parse_args(argv)
    check_image_tool_args(args)
    from mmpretrain.apis import ImageClassificationInferencer
    inferencer = ImageClassificationInferencer(model=args.config, pretrained=args.checkpoint,
                                               device=args.device)
    if not inferencer.classes:
        raise UsageError(f'{args.checkpoint} holds no class names (dataset_meta); pass a '
                         f'checkpoint written by tools/train.py')
    classes = list(inferencer.classes)
    results = inferencer(args.images)
    text_font = drawing.font(18)
    tiles, wrong = [], 0
    for path, result in zip(args.images, results):
        truth = osp.basename(osp.dirname(path))
        truth = truth if truth in classes else None
        predicted, score = result['pred_class'], float(result['pred_score'])
        image = drawing.upscale(Image.open(path).convert('RGB'),
                                resample=Image.Resampling.BICUBIC)[0]
        lines = [(f'predicted: {predicted} ({score:.2f})', (0, 0, 0))]
        if truth is not None:
            correct = truth == predicted
            wrong += not correct
            image = drawing.frame(image, drawing.RIGHT if correct else drawing.WRONG)
            lines = [(f'true: {truth}', (0, 0, 0)),
                     (f'{"predicted" if correct else "WRONG"}: {predicted} ({score:.2f})',
                      drawing.RIGHT if correct else drawing.WRONG)]
        print(f'{path}: {predicted} {score:.2f}' + (f' (true: {truth})' if truth else ''))
        tiles.append(drawing.caption(image, lines, text_font))
    body = drawing.grid(tiles, args.columns)
    title = f'{osp.basename(args.config)}: predicted class and score'
    if any(osp.basename(osp.dirname(p)) in classes for p in args.images):
        title += f'; {wrong} of {len(tiles)} misclassified (red frame)'
        print(f'{wrong} of {len(tiles)} misclassified')
    picture = drawing.compose(body, title)
    drawing.save_picture(picture, args.out)
    return results


if __name__ == '__main__':
    run_cli(main)
