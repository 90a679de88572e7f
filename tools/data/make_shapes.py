#!/usr/bin/env python
"""Generate a synthetic dataset of coloured shapes on textured backgrounds, in real formats.

    python tools/data/make_shapes.py imagenet data/shapes_cls    # mmpretrain folder layout
    python tools/data/make_shapes.py coco data/shapes_coco        # COCO boxes and masks
    python tools/data/make_shapes.py ade data/shapes_ade          # ADE20K semantic label maps

Deterministic: the same seed writes the same files. Layouts:

- ``imagenet``: ``{train,val}/<class>/<name>.png`` and ``meta/{train,val}.txt`` (lines
  ``<class>/<name>.png <label>``), which mmpretrain's ``ImageNet`` / ``CustomDataset`` read;
  ``meta/classes.txt`` lists the classes. One shape per image; the shape is the label.
- ``coco``: ``{train,val}2017/<id>.png`` and ``annotations/instances_{train,val}2017.json``
  with boxes and polygon masks, as mmdet's ``CocoDataset`` reads COCO. 1-4 shapes per image,
  placed so that they do not overlap.
- ``ade``: ``images/{training,validation}/<id>.jpg`` and ``annotations/{training,validation}/
  <id>.png``, the ADEChallengeData2016 layout that mmseg's ``ADE20KDataset`` reads. 1-4
  non-overlapping shapes as in ``coco``, larger (radius 14-30% of the height); label maps hold
  0 for the background (and the ring's hole) and 1-6 for the shapes. The segmentation demo
  learns the background as class 0; ``reduce_zero_label=True`` would instead ignore it (255)
  and map the shapes to classes 0-5, as ADE20K's "other" label 0 is handled.
"""
import argparse
import json
import os
import os.path as osp
import shutil
from typing import List, Tuple

import numpy as np
from PIL import Image, ImageDraw

from tnt_mm.utils.cli import add_debug_arg, run_cli

CLASSES = ('circle', 'square', 'triangle', 'cross', 'ring', 'star')


def star_points(cx: float, cy: float, radius: float, angle: float) -> List[Tuple[float, float]]:
    points = []
    for i in range(10):
        r = radius if i % 2 == 0 else radius * 0.45
        a = angle + i * np.pi / 5
        points.append((cx + r * np.cos(a), cy + r * np.sin(a)))
    return points


def polygon_of(name: str, cx: float, cy: float, radius: float,
               angle: float) -> List[Tuple[float, float]]:
    """Outline of a shape, as a polygon (circles and rings are sampled)."""
    if name in ('circle', 'ring'):
        a = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        return list(zip(cx + radius * np.cos(a), cy + radius * np.sin(a)))
    if name == 'square':
        a = angle + np.pi / 4 + np.arange(4) * np.pi / 2
        return list(zip(cx + radius * np.cos(a), cy + radius * np.sin(a)))
    if name == 'triangle':
        a = angle - np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        return list(zip(cx + radius * np.cos(a), cy + radius * np.sin(a)))
    if name == 'star':
        return star_points(cx, cy, radius, angle)
    if name == 'cross':
        w = radius * 0.35
        base = [(-w, -radius), (w, -radius), (w, -w), (radius, -w), (radius, w), (w, w),
                (w, radius), (-w, radius), (-w, w), (-radius, w), (-radius, -w), (-w, -w)]
        c, s = np.cos(angle), np.sin(angle)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in base]
    raise ValueError(f'unknown shape {name!r}; known: {CLASSES}')


def textured_background(rng: np.random.Generator, height: int, width: int) -> Image.Image:
    """Low-saturation texture (smooth grey noise, a slight tint, stripes): a background the
    model must learn to ignore, which never takes the saturated colours of the shapes."""
    coarse = rng.uniform(70, 190, size=(max(2, height // 16), max(2, width // 16), 1))
    grey = Image.fromarray(coarse[..., 0].astype(np.uint8)).resize((width, height), Image.BICUBIC)
    array = np.repeat(np.asarray(grey, dtype=np.float32)[..., None], 3, axis=-1)
    array += rng.uniform(-12, 12, size=3)  # tint
    period = rng.uniform(6, 20)
    yy, xx = np.mgrid[0:height, 0:width]
    theta = rng.uniform(0, np.pi)
    stripes = 15 * np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * 2 * np.pi / period)
    array += stripes[..., None] + rng.normal(0, 5, size=array.shape)
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def draw_shape(image: Image.Image, rng: np.random.Generator, name: str, cx: float, cy: float,
               radius: float) -> List[Tuple[float, float]]:
    """Draw one shape in a saturated random colour; return its outline polygon."""
    draw = ImageDraw.Draw(image)
    colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
    while max(colour) - min(colour) < 140:  # saturated: stands out of the grey texture
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
    polygon = polygon_of(name, cx, cy, radius, rng.uniform(0, 2 * np.pi))
    background = image.copy() if name == 'ring' else None
    draw.polygon(polygon, fill=colour)
    if name == 'ring':  # the hole shows the background again
        hole = Image.new('L', image.size, 0)
        ImageDraw.Draw(hole).polygon(polygon_of('circle', cx, cy, radius * 0.55, 0.0), fill=255)
        image.paste(background, mask=hole)
    return polygon


def make_imagenet(out_dir: str, num_train: int, num_val: int, size: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    os.makedirs(osp.join(out_dir, 'meta'), exist_ok=True)
    counts = {}
    for split, count in (('train', num_train), ('val', num_val)):
        lines = []
        for index in range(count):
            label = index % len(CLASSES)  # balanced classes
            name = CLASSES[label]
            image = textured_background(rng, size, size)
            radius = rng.uniform(0.22, 0.4) * size
            cx, cy = rng.uniform(radius, size - radius, size=2)
            draw_shape(image, rng, name, cx, cy, radius)
            relative = f'{name}/{split}_{index:05d}.png'
            os.makedirs(osp.join(out_dir, split, name), exist_ok=True)
            image.save(osp.join(out_dir, split, relative))
            lines.append(f'{relative} {label}')
        with open(osp.join(out_dir, 'meta', f'{split}.txt'), 'w') as f:
            f.write('\n'.join(lines) + '\n')
        counts[split] = count
    with open(osp.join(out_dir, 'meta', 'classes.txt'), 'w') as f:
        f.write('\n'.join(CLASSES) + '\n')
    return counts


def _place(rng: np.random.Generator, size: Tuple[int, int], placed: list,
           tries: int = 50, radius_range: Tuple[float, float] = (0.08, 0.2)):
    """A (cx, cy, radius) inside the image that overlaps no placed shape, or None."""
    height, width = size
    for _ in range(tries):
        radius = rng.uniform(*radius_range) * min(height, width)
        cx, cy = rng.uniform(radius, width - radius), rng.uniform(radius, height - radius)
        if all((cx - x) ** 2 + (cy - y) ** 2 > (radius + r + 2) ** 2 for x, y, r in placed):
            return cx, cy, radius
    return None


def draw_scene(rng: np.random.Generator, height: int, width: int,
               radius_range: Tuple[float, float]) -> Tuple[Image.Image, list]:
    """A textured background with 1-4 non-overlapping shapes (fewer where no room is left).
    Returns the image and ``(label, outline polygon, (cx, cy, radius))`` of each shape."""
    image = textured_background(rng, height, width)
    shapes, placed = [], []
    for _ in range(int(rng.integers(1, 5))):
        spot = _place(rng, (height, width), placed, radius_range=radius_range)
        if spot is None:
            break
        label = int(rng.integers(len(CLASSES)))
        polygon = draw_shape(image, rng, CLASSES[label], *spot)
        placed.append(spot)
        shapes.append((label, polygon, spot))
    return image, shapes


def make_coco(out_dir: str, num_train: int, num_val: int, size: int, seed: int,
              radius_range: Tuple[float, float] = (0.08, 0.2)) -> dict:
    rng = np.random.default_rng(seed)
    os.makedirs(osp.join(out_dir, 'annotations'), exist_ok=True)
    categories = [dict(id=i + 1, name=name, supercategory='shape')
                  for i, name in enumerate(CLASSES)]
    counts = {}
    for split, count in (('train', num_train), ('val', num_val)):
        folder = f'{split}2017'
        os.makedirs(osp.join(out_dir, folder), exist_ok=True)
        images, annotations = [], []
        height, width = size, int(size * 4 / 3)  # not square, as real photographs
        for image_id in range(1, count + 1):
            image, shapes = draw_scene(rng, height, width, radius_range)
            for label, polygon, _ in shapes:
                xs = np.clip([x for x, _ in polygon], 0, width)
                ys = np.clip([y for _, y in polygon], 0, height)
                box = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min()),
                       float(ys.max() - ys.min())]
                # shoelace area of the outline (the ring's hole is ignored, as COCO crowds are)
                area = 0.5 * abs(float(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))))
                annotations.append(dict(
                    id=len(annotations) + 1, image_id=image_id, category_id=label + 1,
                    bbox=box, area=area, iscrowd=0,
                    segmentation=[[float(v) for point in zip(xs, ys) for v in point]]))
            file_name = f'{image_id:06d}.png'
            image.save(osp.join(out_dir, folder, file_name))
            images.append(dict(id=image_id, file_name=file_name, height=height, width=width))
        with open(osp.join(out_dir, 'annotations', f'instances_{folder}.json'), 'w') as f:
            json.dump(dict(images=images, annotations=annotations, categories=categories), f)
        counts[split] = count
    return counts


def draw_label(label_map: Image.Image, name: str, polygon: List[Tuple[float, float]], cx: float,
               cy: float, radius: float, value: int) -> None:
    """Rasterise a shape drawn by :func:`draw_shape` into a label map with ``value``; the
    ring's hole stays background (0), as it shows the background in the image."""
    draw = ImageDraw.Draw(label_map)
    draw.polygon(polygon, fill=value)
    if name == 'ring':
        draw.polygon(polygon_of('circle', cx, cy, radius * 0.55, 0.0), fill=0)


# of the image height; larger than the COCO shapes: every pixel must be classified, so each
# shape should span several 16x16 patches
ADE_RADIUS_RANGE = (0.14, 0.3)


def make_ade(out_dir: str, num_train: int, num_val: int, size: int, seed: int,
             radius_range: Tuple[float, float] = ADE_RADIUS_RANGE) -> dict:
    rng = np.random.default_rng(seed)
    counts = {}
    for split, count in (('training', num_train), ('validation', num_val)):
        for folder in ('images', 'annotations'):
            os.makedirs(osp.join(out_dir, folder, split), exist_ok=True)
        height, width = size, int(size * 4 / 3)  # not square, as real photographs
        for index in range(1, count + 1):
            image, shapes = draw_scene(rng, height, width, radius_range)
            label_map = Image.new('L', (width, height), 0)  # 0: background
            for label, polygon, spot in shapes:
                draw_label(label_map, CLASSES[label], polygon, *spot, value=label + 1)
            name = f'ADE_{split}_{index:08d}'  # ADE20K's file naming
            image.save(osp.join(out_dir, 'images', split, f'{name}.jpg'), quality=95)
            label_map.save(osp.join(out_dir, 'annotations', split, f'{name}.png'))
        counts[split] = count
    return counts


MAKERS = {'imagenet': make_imagenet, 'coco': make_coco, 'ade': make_ade}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('layout', choices=sorted(MAKERS), help='dataset format to write')
    parser.add_argument('out_dir', help='dataset root to (re)create')
    parser.add_argument('--num-train', type=int, default=1200)
    parser.add_argument('--num-val', type=int, default=300)
    parser.add_argument('--size', type=int, default=64,
                        help='image side (imagenet) or height (coco, ade: width 4/3 of it) in '
                        'pixels')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--radius-range', type=float, nargs=2, metavar=('MIN', 'MAX'),
                        help='coco, ade: shape radius as a fraction of the image height '
                        '(default 0.08 0.2 for coco, 0.14 0.3 for ade)')
    add_debug_arg(parser)
    args = parser.parse_args(argv)
    if args.num_train <= 0 or args.num_val <= 0 or args.size < 16:
        parser.error('--num-train and --num-val must be positive and --size at least 16')
    options = {}
    if args.radius_range is not None:
        low, high = args.radius_range
        if args.layout == 'imagenet':
            parser.error('--radius-range applies to the coco and ade layouts only')
        if not 0 < low <= high <= 0.5:
            parser.error(f'--radius-range {low} {high}: need 0 < MIN <= MAX <= 0.5 (a fraction '
                         f'of the image height; a shape must fit in the image)')
        options['radius_range'] = (low, high)
    # Build beside the target and rename: an interrupted run leaves no half dataset behind.
    partial = args.out_dir.rstrip('/') + '.partial'
    shutil.rmtree(partial, ignore_errors=True)
    counts = MAKERS[args.layout](partial, args.num_train, args.num_val, args.size, args.seed,
                                 **options)
    with open(osp.join(partial, 'info.json'), 'w') as f:
        json.dump(dict(layout=args.layout, classes=CLASSES, size=args.size, seed=args.seed,
                       **options, **counts), f, indent=1)
    shutil.rmtree(args.out_dir, ignore_errors=True)
    os.replace(partial, args.out_dir)
    shape = f'{args.size}x{args.size}' if args.layout == 'imagenet' else \
        f'{args.size}x{int(args.size * 4 / 3)}'
    print(f'wrote {args.out_dir}: {counts} images of {len(CLASSES)} classes, {shape} (HxW), '
          f'seed {args.seed}')


if __name__ == '__main__':
    run_cli(main)
