#!/usr/bin/env python
"""Speed and memory of tnt_mm's TNT-S against timm's TNT-S (same weights) and timm's DeiT-S.

    python tools/analysis/benchmark.py                 # the full table (make bench)
    python tools/analysis/benchmark.py --rounds 3 --no-memory
    python tools/analysis/benchmark.py --verbose          # also every round's time: the noise

All timings come from one process, in interleaved rounds (every model once per round, in a
seeded shuffled order), and the table shows medians and ratios within this run: the machines
are noisy, ratios are what compare.
- forward throughput at 224x224, batch 8 (images/s);
- forward time and forward+backward time at 800x1216, batch 1;
- peak memory of forward+backward at 800x1216. On the CPU each model runs in a child process of
  its own and reports its own peak (``VmHWM``): ``ru_maxrss`` of a child started by a large parent
  would inherit the parent's peak. On CUDA it is ``torch.cuda.max_memory_allocated``.
The compared outputs: the raw block features for detection sizes (the pyramid is left out: timm
and DeiT have none) and the normalised class token at 224.
"""
import argparse
import contextlib
import json
import os
import os.path as osp
import random
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DETECTION_SIZE = (800, 1216)
OURS = 'tnt_mm TNT-S'
SMALL = (OURS, 'timm TNT-S', 'timm DeiT-S')
# Extra rows: memory with block checkpointing, and (--compile) speed under torch.compile.
WITH_CP = 'tnt_mm TNT-S with_cp'
COMPILED = 'tnt_mm TNT-S compiled'
# CPU only: the same model with the inner transformer on the reference backend (plain PyTorch,
# SDPA) instead of the fused kernels.
REFERENCE = 'tnt_mm TNT-S, reference backend'


def build(name: str, img_size, device: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Return ``forward(x) -> tensor`` for a model at ``img_size``, all TNTs on the same weights."""
    import timm

    from tnt_mm.models import TNT
    from tnt_mm.models.backbones.tnt_convert import convert_state_dict
    from tnt_mm.ops import inner_backend
    torch.manual_seed(0)
    reference = timm.create_model('tnt_s_patch16_224')  # the weights everybody gets
    classify = tuple(img_size) == (224, 224)
    ours = name.startswith(OURS)
    if ours:
        model = TNT('small', out_type='cls_token' if classify else 'featmap',
                    with_cp=name == WITH_CP)
        state, _ = convert_state_dict(reference.state_dict())
        own = model.state_dict()
        model.load_state_dict({k[len('backbone.'):]: v for k, v in state.items()
                               if k[len('backbone.'):] in own}, strict=True)
    elif name == 'timm TNT-S':
        # timm's TNT asserts its construction size: build it at the size it will see.
        model = timm.create_model('tnt_s_patch16_224', img_size=img_size)
        from timm.models.tnt import checkpoint_filter_fn
        model.load_state_dict(checkpoint_filter_fn(reference.state_dict(), model))
    elif name == 'timm DeiT-S':
        model = timm.create_model('deit_small_patch16_224', img_size=img_size)
    else:
        raise ValueError(f'unknown model {name!r}; choose from {SMALL}')
    model = model.to(device)

    if ours:
        # dynamic=False: one static graph per input size, as each size is timed on its own
        run = torch.compile(model, dynamic=False) if name == COMPILED else model
        backend = (lambda: inner_backend('reference')) if name == REFERENCE \
            else contextlib.nullcontext

        def forward(x):
            with backend():
                return run(x)[-1]
    else:
        def forward(x):
            feats = model.forward_features(x)
            return feats[:, 0] if classify else feats
    forward.module = model
    return forward


def sync(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def timed(fn: Callable[[], None], device: str) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def interleaved(jobs: Dict[str, Callable[[], None]], rounds: int, device: str,
                warmup: int = 1, label: str = '', verbose: bool = False,
                seed: int = 0) -> Dict[str, float]:
    """Median seconds of each job over ``rounds`` interleaved rounds; ``verbose`` prints every
    round's time, which shows how noisy the machine was.

    Every round runs each job once, in an order shuffled afresh (seeded, so a run can be
    repeated): a job's time depends on the job before it (presumably through the heap and caches
    it leaves), and in a fixed order each job would always follow the same one. On this 2-core
    machine, tnt_mm TNT-S at 224 took 4-5% longer right after the reference-backend row, its fixed
    predecessor in the table's order, than after timm TNT-S or DeiT-S (40 shuffled rounds,
    twice).
    """
    for _ in range(warmup):
        for fn in jobs.values():
            fn()
    rng, names = random.Random(seed), list(jobs)
    times: Dict[str, List[float]] = {name: [] for name in names}
    for _ in range(rounds):
        for name in rng.sample(names, len(names)):
            times[name].append(timed(jobs[name], device))
    if verbose:
        for name, t in times.items():
            print(f'{label} {name}: ' + ' '.join(f'{s:.3f}' for s in t) + ' s')
    return {name: statistics.median(t) for name, t in times.items()}


def forward_job(forward, x):
    def run():
        with torch.no_grad():
            forward(x)
    return run


def train_job(forward, x):
    def run():
        forward.module.zero_grad(set_to_none=True)
        forward(x).float().square().mean().backward()
    return run


def peak_memory_child(name: str, device: str) -> float:
    """Run one forward+backward at detection size in a fresh process; its peak in GB."""
    out = subprocess.run([sys.executable, __file__, '--child', name, '--device', device],
                         capture_output=True, text=True, check=True, env=os.environ.copy())
    return json.loads(out.stdout.strip().splitlines()[-1])['peak_gb']


def child(name: str, device: str) -> None:
    forward = build(name, DETECTION_SIZE, device)
    forward.module.train()
    x = torch.randn(1, 3, *DETECTION_SIZE, device=device)
    if device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    train_job(forward, x)()
    if device == 'cuda':
        peak = torch.cuda.max_memory_allocated() / 1e9
    else:
        with open('/proc/self/status') as f:
            peak = next(int(line.split()[1]) for line in f if line.startswith('VmHWM')) / 1e6
    print(json.dumps(dict(peak_gb=peak)))


def detector_child(with_cp: bool, device: str) -> None:
    """One Faster R-CNN TNT-S train step at 800x1333 after a warm-up step: time and peak."""
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(osp.join(ROOT, 'configs/faster_rcnn_tnt_s_fpn.py'))
    cfg.model.backbone.update(init_cfg=None, with_cp=with_cp)
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    torch.manual_seed(0)
    packed = demo_mm_inputs(batch_size=1, image_shapes=[(3, 800, 1333)], num_items=[8],
                            num_classes=80, device=device)

    def step():
        data = model.data_preprocessor(packed, True)
        loss, _ = model.parse_losses(model(**data, mode='loss'))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    step()
    seconds = timed(step, device)
    if device == 'cuda':
        peak = torch.cuda.max_memory_allocated() / 1e9
    else:
        with open('/proc/self/status') as f:
            peak = next(int(line.split()[1]) for line in f if line.startswith('VmHWM')) / 1e6
    print(json.dumps(dict(seconds=seconds, peak_gb=peak)))


def detector_table(device: str) -> None:
    print('\nFaster R-CNN + FPN, TNT-S, one training step (AdamW) at 800x1333, batch 1:')
    print('| backbone | step s | peak GB |')
    print('|---|---|---|')
    for with_cp in (False, True):
        out = subprocess.run([sys.executable, __file__, '--detector-child', str(int(with_cp)),
                              '--device', device], capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(f'| TNT-S{" with_cp" if with_cp else ""} | {result["seconds"]:.2f} '
              f'| {result["peak_gb"]:.2f} |')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--rounds', type=int, default=5,
                        help='timed rounds per figure at 800x1216 (half of them for '
                        'forward+backward). Defaults to 5')
    parser.add_argument('--rounds-224', type=int, default=20,
                        help='timed rounds at 224, where one takes a second or less and the '
                        'median needs more of them to settle. Defaults to 20')
    parser.add_argument('--verbose', action='store_true', help='print every round\'s time')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--batch', type=int, default=8, help='batch at 224. Defaults to 8')
    parser.add_argument('--no-memory', action='store_true', help='skip the memory children')
    parser.add_argument('--no-train', action='store_true', help='skip forward+backward timing')
    parser.add_argument('--compile', action='store_true',
                        help='add a row for tnt_mm TNT-S under torch.compile (forward only; '
                        'the compile time is printed, not timed)')
    parser.add_argument('--detector', action='store_true',
                        help='also time a Faster R-CNN TNT-S training step at 800x1333, with and '
                        'without with_cp (separate processes)')
    parser.add_argument('--only-detector', action='store_true',
                        help='run only the Faster R-CNN training-step measurement')
    parser.add_argument('--child', help=argparse.SUPPRESS)
    parser.add_argument('--detector-child', type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.device)
        return
    if args.detector_child is not None:
        detector_child(bool(args.detector_child), args.device)
        return
    if args.only_detector:
        detector_table(args.device)
        return
    device = args.device
    print(f'device: {device}, threads: {torch.get_num_threads()}, torch {torch.__version__}, '
          f'rounds: {args.rounds_224} at 224, {args.rounds} at 800x1216 (medians)')

    speed_rows = SMALL + ((REFERENCE,) if device == 'cpu' else ()) + (
        (COMPILED,) if args.compile else ())
    memory_rows = SMALL + (WITH_CP,)
    results: Dict[str, Dict[str, float]] = {name: {} for name in speed_rows + memory_rows}

    def eval_models(img_size):
        models = {name: build(name, img_size, device) for name in speed_rows}
        for forward in models.values():
            forward.module.eval()
        if COMPILED in models:
            start = time.perf_counter()
            try:
                forward_job(models[COMPILED], torch.randn(1, 3, *img_size, device=device))()
                print(f'torch.compile at {img_size[0]}x{img_size[1]}: first call '
                      f'{time.perf_counter() - start:.0f}s')
            except Exception as exc:  # report, and go on without the compiled row
                print(f'torch.compile at {img_size[0]}x{img_size[1]} failed: '
                      f'{type(exc).__name__}: {str(exc).splitlines()[0]}')
                models.pop(COMPILED)
        return models

    x224 = torch.randn(args.batch, 3, 224, 224, device=device)
    models = eval_models((224, 224))
    with torch.no_grad():
        ours, ref = models[OURS](x224), models['timm TNT-S'](x224)
    print(f'check: tnt_mm vs timm TNT-S class token at 224, max abs diff '
          f'{(ours - ref).abs().max().item():.1e}')
    secs = interleaved({n: forward_job(f, x224) for n, f in models.items()}, args.rounds_224,
                       device, label='fwd 224', verbose=args.verbose)
    for name, s in secs.items():
        results[name]['img/s @224'] = args.batch / s
    del models

    xdet = torch.randn(1, 3, *DETECTION_SIZE, device=device)
    models = eval_models(DETECTION_SIZE)
    secs = interleaved({n: forward_job(f, xdet) for n, f in models.items()}, args.rounds,
                       device, label='fwd 800x1216', verbose=args.verbose)
    for name, s in secs.items():
        results[name]['fwd s @800x1216'] = s
    models.pop(COMPILED, None)  # training under torch.compile is not measured here
    models.pop(REFERENCE, None)  # kernels off: compared in inference only, to keep the run short
    if not args.no_train:
        for forward in models.values():
            forward.module.train()
        secs = interleaved({n: train_job(f, xdet) for n, f in models.items()},
                           max(1, args.rounds // 2), device, label='fwd+bwd 800x1216',
                           verbose=args.verbose)
        for name, s in secs.items():
            results[name]['fwd+bwd s @800x1216'] = s
    del models
    if not args.no_memory:
        for name in memory_rows:
            results[name]['peak GB fwd+bwd @800x1216'] = peak_memory_child(name, device)

    columns = [c for c in results[OURS]]
    print()
    print('| model | ' + ' | '.join(columns) + ' |')
    print('|---' * (len(columns) + 1) + '|')
    for name, row in results.items():
        print(f'| {name} | ' + ' | '.join(f'{row[c]:.2f}' if c in row else '-'
                                          for c in columns) + ' |')
    print()
    for mine in (OURS, REFERENCE, WITH_CP, COMPILED):
        if mine not in results:
            continue
        for other in SMALL[1:]:
            shared = [c for c in columns if c in results[mine]]
            ratios = ', '.join(f'{c} {results[mine][c] / results[other][c]:.2f}x' for c in shared)
            print(f'{mine} / {other}: {ratios}')
    if args.detector:
        detector_table(device)


if __name__ == '__main__':
    main()
