#!/usr/bin/env python
"""Detect objects with a detector exported whole to ONNX: ONNX Runtime, numpy and Pillow only.

    python tools/deployment/onnx_infer.py faster_rcnn.onnx a.jpg b.jpg --out results/

The file is one that ``tools/deployment/pytorch2onnx.py`` wrote for a detector (``--part all``,
the default). Its metadata says how the config's test pipeline prepares an image; this tool
does the same: it resizes the image as mmcv does (``Resize`` with or without ``keep_ratio``,
bilinear with OpenCV's pixel centres), orders the channels, normalises, and runs the graph. The
boxes are scaled back to the original image and Mask R-CNN's RoI masks are pasted into it as
mmdet pastes them, then thresholded at the config's ``mask_thr_binary``.

For each image it writes ``<out>/<name>.png`` (the detections at or above ``--score-thr``
drawn) and ``<out>/<name>.json``: every detection's box (x1, y1, x2, y2, original pixels),
score, label and class name, and masks as COCO uncompressed RLE (``size``, column-major
``counts``). The file stands alone: copy it next to the model; nothing else of tnt_mm is needed.
"""
import argparse
import colorsys
import json
import os
import os.path as osp
import sys

import numpy as np
from PIL import Image, ImageDraw

METADATA_KEY = 'tnt_mm'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('model', help='the .onnx file')
    parser.add_argument('images', nargs='+', help='image files')
    parser.add_argument('--out', required=True, help='folder for the pictures and JSON files')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='draw detections at or above this score (default 0.3; the JSON '
                        'holds all)')
    return parser.parse_args(argv)


def fail(message: str) -> None:
    print(f'error: {message}', file=sys.stderr)
    sys.exit(2)


def read_metadata(session) -> dict:
    text = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    return json.loads(text) if text else {}


def resized_size(width: int, height: int, resize: dict):
    """mmcv's ``imrescale`` (``keep_ratio``: the largest size within the scale's long and short
    edge) or ``imresize`` (the scale itself); ``scale`` is (w, h)."""
    if not resize:
        return width, height
    scale_w, scale_h = resize['scale']
    if not resize['keep_ratio']:
        return scale_w, scale_h
    factor = min(max(scale_w, scale_h) / max(width, height),
                 min(scale_w, scale_h) / min(width, height))
    return int(width * factor + 0.5), int(height * factor + 0.5)


def _linear_taps(source: int, target: int):
    """OpenCV's bilinear taps along one axis: pixel centres, edges replicated."""
    position = (np.arange(target) + 0.5) * (source / target) - 0.5
    position = np.clip(position, 0, source - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, source - 1)
    return low, high, (position - low).astype(np.float32)


def resize_bilinear(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``cv2.resize(image, (width, height))`` (INTER_LINEAR) on an (H, W, 3) uint8 array, to
    within one grey level (OpenCV rounds fixed-point weights)."""
    if image.shape[:2] == (height, width):
        return image
    pixels = image.astype(np.float32)
    low, high, weight = _linear_taps(image.shape[0], height)
    pixels = pixels[low] * (1 - weight)[:, None, None] + pixels[high] * weight[:, None, None]
    low, high, weight = _linear_taps(image.shape[1], width)
    pixels = pixels[:, low] * (1 - weight)[None, :, None] + pixels[:, high] * weight[None, :, None]
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def prepare(image: np.ndarray, metadata: dict):
    """An (H, W, 3) RGB uint8 image to the graph's input and the resize's (sx, sy)."""
    height, width = image.shape[:2]
    new_w, new_h = resized_size(width, height, metadata.get('resize'))
    pixels = resize_bilinear(image, new_w, new_h).astype(np.float32)
    spec = metadata['input']
    if not spec['rgb']:
        pixels = pixels[..., ::-1]
    pixels = (pixels - np.float32(spec['mean'])) / np.float32(spec['std'])
    return pixels.transpose(2, 0, 1)[None].copy(), (new_w / width, new_h / height)


def paste_masks(masks: np.ndarray, boxes: np.ndarray, height: int, width: int,
                threshold: float) -> np.ndarray:
    """RoI-sized mask probabilities (N, h, w) into (N, height, width) boolean masks as mmdet's
    ``_do_paste_mask``: each pixel centre samples its box's mask bilinearly (``grid_sample``,
    ``align_corners=False``, zeros outside), then ``>= threshold``."""
    pasted = np.zeros((len(masks), height, width), dtype=bool)
    centres_y, centres_x = np.arange(height) + 0.5, np.arange(width) + 0.5
    for k, (mask, (x0, y0, x1, y1)) in enumerate(zip(masks, boxes)):
        size_h, size_w = mask.shape
        v = (centres_y - y0) / max(y1 - y0, 1e-6) * size_h - 0.5
        u = (centres_x - x0) / max(x1 - x0, 1e-6) * size_w - 0.5
        v0, u0 = np.floor(v).astype(int), np.floor(u).astype(int)
        fv, fu = (v - v0)[:, None], (u - u0)[None, :]
        # a zero border; neighbours beyond the mask are clipped onto it
        padded = np.pad(mask.astype(np.float32), 1)
        r0, r1 = np.clip(v0 + 1, 0, size_h + 1), np.clip(v0 + 2, 0, size_h + 1)
        c0, c1 = np.clip(u0 + 1, 0, size_w + 1), np.clip(u0 + 2, 0, size_w + 1)
        value = (padded[r0][:, c0] * (1 - fv) * (1 - fu) + padded[r0][:, c1] * (1 - fv) * fu
                 + padded[r1][:, c0] * fv * (1 - fu) + padded[r1][:, c1] * fv * fu)
        pasted[k] = value >= threshold
    return pasted


def encode_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths of the column-major pixels, zeros first."""
    flat = mask.ravel(order='F').astype(np.int8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]]))) \
        if flat.size else np.array([0])
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    return dict(size=list(mask.shape), counts=counts)


def decode_rle(rle: dict) -> np.ndarray:
    """The inverse of :func:`encode_rle`."""
    values = np.zeros(sum(rle['counts']), dtype=bool)
    start = 0
    for index, count in enumerate(rle['counts']):
        values[start:start + count] = index % 2 == 1
        start += count
    return values.reshape(rle['size'], order='F')


def colours(count: int):
    return [tuple(int(255 * c) for c in colorsys.hsv_to_rgb(i / max(count, 1), 0.75, 1.0))
            for i in range(count)]


def draw(image: Image.Image, detections: dict, classes, score_thr: float) -> Image.Image:
    picture = image.convert('RGB')
    palette = colours(len(classes) if classes else int(detections['labels'].max(initial=0)) + 1)
    shown = np.flatnonzero(detections['scores'] >= score_thr)
    if 'masks' in detections and len(shown):
        pixels = np.asarray(picture).astype(np.float32)
        for k in shown:
            colour = np.float32(palette[detections['labels'][k] % len(palette)])
            mask = detections['masks'][k]
            pixels[mask] = pixels[mask] * 0.5 + colour * 0.5
        picture = Image.fromarray(pixels.astype(np.uint8))
    pen = ImageDraw.Draw(picture)
    for k in shown:
        label = int(detections['labels'][k])
        colour = palette[label % len(palette)]
        x0, y0, x1, y1 = detections['boxes'][k].tolist()
        pen.rectangle([x0, y0, x1, y1], outline=colour, width=2)
        name = classes[label] if classes else str(label)
        pen.text((x0 + 2, y0 + 1), f'{name} {detections["scores"][k]:.2f}', fill=colour)
    return picture


def detect(session, metadata: dict, path: str) -> dict:
    """One image's detections in its own pixels: ``boxes``, ``scores``, ``labels`` (and
    boolean ``masks``)."""
    image = np.asarray(Image.open(path).convert('RGB'))
    inputs, (scale_x, scale_y) = prepare(image, metadata)
    fixed = session.get_inputs()[0].shape[2:]
    if all(isinstance(d, int) for d in fixed) and list(inputs.shape[2:]) != fixed:
        fail(f'{path} resizes to {inputs.shape[2]}x{inputs.shape[3]}, but the file was '
             f'exported for {fixed[0]}x{fixed[1]} only: export it with --dynamic')
    outputs = dict(zip([o.name for o in session.get_outputs()],
                       session.run(None, {metadata['input']['name']: inputs})))
    detections = dict(boxes=outputs['boxes'] / np.float32([scale_x, scale_y] * 2),
                      scores=outputs['scores'], labels=outputs['labels'])
    if 'masks' in outputs:
        threshold = metadata.get('test_cfg', {}).get('mask_thr_binary', 0.5)
        detections['masks'] = paste_masks(outputs['masks'], detections['boxes'],
                                          image.shape[0], image.shape[1], threshold)
    return detections


def to_json(detections: dict, classes) -> list:
    records = []
    for k in range(len(detections['scores'])):
        label = int(detections['labels'][k])
        record = dict(box=[round(float(v), 3) for v in detections['boxes'][k]],
                      score=float(detections['scores'][k]), label=label,
                      name=classes[label] if classes else None)
        if 'masks' in detections:
            record['mask'] = encode_rle(detections['masks'][k])
        records.append(record)
    return records


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        import onnxruntime as ort
    except ImportError:
        fail('onnxruntime is not installed: pip install onnxruntime')
    for path in [args.model, *args.images]:
        if not osp.isfile(path):
            fail(f'{path}: no such file')
    session = ort.InferenceSession(args.model, providers=['CPUExecutionProvider'])
    metadata = read_metadata(session)
    if metadata.get('task') != 'detection' or metadata.get('part') != 'all':
        fail(f'{args.model} is not a detector exported whole by tools/deployment/pytorch2onnx.py '
             f'(--part all): its metadata says task={metadata.get("task")!r}, '
             f'part={metadata.get("part")!r}')
    classes = metadata.get('classes')
    os.makedirs(args.out, exist_ok=True)
    for path in args.images:
        detections = detect(session, metadata, path)
        stem = osp.splitext(osp.basename(path))[0]
        with open(osp.join(args.out, f'{stem}.json'), 'w') as file:
            json.dump(dict(image=path, detections=to_json(detections, classes)), file)
        draw(Image.open(path), detections, classes, args.score_thr).save(
            osp.join(args.out, f'{stem}.png'))
        shown = int((detections['scores'] >= args.score_thr).sum())
        print(f'{path}: {len(detections["scores"])} detections, {shown} at or above '
              f'{args.score_thr:g} drawn -> {osp.join(args.out, stem)}.png, .json')


if __name__ == '__main__':
    main()
