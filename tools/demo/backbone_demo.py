#!/usr/bin/env python
"""Run the TNT backbone on an image and print its feature pyramid and the size table.

    python tools/demo/backbone_demo.py                       # a generated 500x750 test image
    python tools/demo/backbone_demo.py --image photo.jpg --checkpoint checkpoints/tnt_s.pth

Without ``--checkpoint`` the backbone is randomly initialised: the shapes, strides and sizes
are what this demo shows; convert the official weights for meaningful features (README).
"""
import argparse
import time

import numpy as np
import torch

import tnt_mm  # noqa: F401
from tnt_mm.models import TNT
from tnt_mm.utils.cli import add_debug_arg, require_file, run_cli
from tnt_mm.utils.complexity import complexity_table, count_params, format_table

# Official TNT preprocessing: mean = std = 0.5 on [0, 1] pixels.
MEAN = STD = 0.5


def synthetic_image(height: int = 500, width: int = 750) -> np.ndarray:
    """An RGB test card: a gradient with a few solid shapes (no download needed)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([xx / width, yy / height, 0.5 * np.ones_like(xx)], axis=-1)
    image[60:220, 80:300] = (0.9, 0.2, 0.2)
    image[((yy - 330) ** 2 + (xx - 520) ** 2) < 90 ** 2] = (0.2, 0.3, 0.9)
    image[380:460, 100:650:40] = (0.1, 0.8, 0.1)
    return (image * 255).astype(np.uint8)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--image', help='image file (default: a generated 500x750 test card)')
    parser.add_argument('--arch', default='small')
    parser.add_argument('--checkpoint', help='converted checkpoint (tools/model_converters)')
    parser.add_argument('--no-table', action='store_true', help='skip the params/FLOPs table')
    add_debug_arg(parser)
    args = parser.parse_args(argv)
    for path, what in ((args.image, '--image'), (args.checkpoint, '--checkpoint')):
        if path:
            require_file(path, what)

    if args.image:
        import mmcv
        image = mmcv.imread(args.image, channel_order='rgb')
        source = args.image
    else:
        image = synthetic_image()
        source = 'generated test card'
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255).sub(MEAN).div(STD)

    init_cfg = dict(type='Pretrained', checkpoint=args.checkpoint) if args.checkpoint else None
    model = TNT(args.arch, out_type='pyramid', init_cfg=init_cfg)
    if args.checkpoint:  # (without one the constructor's initialisation stands)
        model.init_weights()
    model.eval()
    with torch.no_grad():
        start = time.perf_counter()
        pyramid = model(x)
        seconds = time.perf_counter() - start

    height, width = image.shape[:2]
    print(f'TNT-{args.arch} ({count_params(model) / 1e6:.2f}M params, '
          f'{"weights from " + args.checkpoint if args.checkpoint else "random weights"}) '
          f'on a {height}x{width} {source}: forward {seconds:.2f}s on {x.device}')
    # the backbone zero-pads the image to a multiple of 16 (see the TNT docstring)
    padded = -(-height // 16) * 16
    print(f'| level | shape (B, C, H, W) | stride (of the image padded to {padded} rows) |')
    print('|---|---|---|')
    for level, feat in enumerate(pyramid):
        print(f'| {level} | {tuple(feat.shape)} | {padded / feat.shape[-2]:g} |')
    if not args.no_table:
        print()
        print('TNT classifiers (ImageNet head), input 224x224, against the paper:')
        print(format_table(complexity_table(224)))


if __name__ == '__main__':
    run_cli(main)
