#!/usr/bin/env python
"""One full-size Faster R-CNN + FPN training step with three backbones: TNT-S, mmdet's
ResNet-50 and DeiT-S with TNT-S's pyramid (timm's blocks 3/6/9/12, the same rescaler).

    python tools/analysis/detector_step.py [--amp bf16] [--size 800 1333] [--batch 2]

Each detector is built from its config with random weights (no download), trained with AdamW
on mmdet's synthetic inputs (8 boxes an image), ``--warmup`` steps first, then ``--steps``
timed ones; the table shows images/s from the median step, the step's peak memory (CUDA) and
the ratios to ResNet-50 and DeiT-S. The models run one after another in one process; the last
line is the table as JSON (tools/analysis/gpu_suite.py reads it).
"""
import argparse
import json
import os.path as osp
import statistics
import sys
import tempfile
import time

import torch
import torch.nn as nn

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
R50_CONFIG = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
TNT_CONFIG = osp.join(ROOT, 'configs', 'faster_rcnn_tnt_s_fpn.py')
MODELS = ('TNT-S', 'ResNet-50', 'DeiT-S')


class DeiTPyramid(nn.Module):
    """timm's DeiT-S blocks 3/6/9/12 through TNT-S's pyramid rescaler: four levels for FPN."""

    def __init__(self):
        super().__init__()
        import timm

        from tnt_mm.models.backbones.pyramid import PyramidRescaler
        self.vit = timm.create_model('deit_small_patch16_224', dynamic_img_size=True,
                                     num_classes=0)
        self.pyramid = PyramidRescaler(self.vit.embed_dim, self.vit.embed_dim)

    def forward(self, x):
        return tuple(self.pyramid(self.vit.forward_intermediates(
            x, indices=[2, 5, 8, 11], output_fmt='NCHW', intermediates_only=True)))


def build_detector(name: str, device: str) -> nn.Module:
    from mmdet.registry import MODELS as DET_MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import tnt_mm  # noqa: F401  (registers the backbone and the detection-ops fallback)
    if name == 'ResNet-50':
        # mmdet's base config only through _base_ (Config.fromfile('mmdet::...') fails)
        with tempfile.NamedTemporaryFile('w', suffix='.py', delete=False) as f:
            f.write(f"_base_ = '{R50_CONFIG}'\n")
        cfg = Config.fromfile(f.name)
        cfg.model.backbone.init_cfg = None  # torchvision's weights: a download
    else:
        cfg = Config.fromfile(TNT_CONFIG)
        cfg.model.backbone.init_cfg = None
    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = DET_MODELS.build(cfg.model)
    if name == 'DeiT-S':
        model.backbone = DeiTPyramid()
    return model.to(device).train()


def measure(name: str, args) -> dict:
    from mmdet.testing import demo_mm_inputs
    device = args.device
    model = build_detector(name, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    torch.manual_seed(0)
    packed = demo_mm_inputs(batch_size=args.batch, image_shapes=[(3, *args.size)] * args.batch,
                            num_items=[8] * args.batch, num_classes=80, device=device)
    dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(args.amp)
    scaler = torch.amp.GradScaler(device) if args.amp == 'fp16' else None

    def step():
        data = model.data_preprocessor(packed, True)
        with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
            loss, _ = model.parse_losses(model(**data, mode='loss'))
        optimizer.zero_grad(set_to_none=True)
        if scaler:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()

    def sync():
        if device == 'cuda':
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    sync()
    if device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    row = {'step_s': round(seconds, 4), 'img_per_s': round(args.batch / seconds, 2),
           'params_m': round(sum(p.numel() for p in model.parameters()) / 1e6, 1)}
    if device == 'cuda':
        row['peak_gb'] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--amp', choices=('bf16', 'fp16'))
    parser.add_argument('--size', type=int, nargs=2, default=(800, 1333), metavar=('H', 'W'))
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--steps', type=int, default=5)
    parser.add_argument('--models', nargs='+', choices=MODELS, default=list(MODELS))
    args = parser.parse_args(argv)
    rows = {}
    for name in args.models:
        rows[name] = measure(name, args)
        if args.device == 'cuda':  # the next model's peak without this one's cached blocks
            torch.cuda.empty_cache()
    gpu = torch.cuda.get_device_name() if args.device == 'cuda' else 'CPU'
    print(f'\nFaster R-CNN + FPN, one AdamW step at {args.size[0]}x{args.size[1]}, batch '
          f'{args.batch}, {args.amp or "fp32"}, {gpu}:')
    print('| backbone | params M | step s | img/s | peak GB |\n|---|---|---|---|---|')
    for name, row in rows.items():
        print(f'| {name} | {row["params_m"]} | {row["step_s"]} | {row["img_per_s"]} '
              f'| {row.get("peak_gb", "-")} |')
    if 'TNT-S' in rows:
        for other in ('ResNet-50', 'DeiT-S'):
            if other in rows:
                ratio = rows['TNT-S']['step_s'] / rows[other]['step_s']
                rows['TNT-S'][f'time_vs_{other}'] = round(ratio, 3)
                print(f'TNT-S step time / {other}: {ratio:.2f}x')
    print(json.dumps({'device': gpu, 'amp': args.amp, 'size': list(args.size),
                      'batch': args.batch, 'rows': rows}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
