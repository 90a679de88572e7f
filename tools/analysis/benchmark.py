#!/usr/bin/env python
"""Speed and memory of tnt_mm's TNT-S against timm's TNT-S (same weights) and timm's DeiT-S.

    python tools/analysis/benchmark.py                 # the full table (make bench)
    python tools/analysis/benchmark.py --rounds 3 --no-memory
    python tools/analysis/benchmark.py --verbose          # also every round's time: the noise
    python tools/analysis/benchmark.py --device cuda --amp bf16 --compile   # the GPU suite
    python tools/analysis/benchmark.py --sweep --plot docs/images/forward_vs_size.png

Two suites. All timings come from one process, in interleaved rounds (every model once per
round, in a seeded shuffled order), and the tables show medians and ratios within the run: the
machines are noisy, ratios are what compare.

``cpu`` (the default on the CPU):
- forward throughput at 224x224, batch 8 (images/s);
- forward time and forward+backward time at 800x1216, batch 1;
- peak memory of forward+backward at 800x1216. Each model runs in a child process of its own
  and reports its own peak (``VmHWM``): ``ru_maxrss`` of a child started by a large parent
  would inherit the parent's peak.
The compared outputs: the raw block features for detection sizes (the pyramid is left out: timm
and DeiT have none) and the normalised class token at 224.

``training`` (the default with ``--device cuda``; :func:`suite_main`), optionally under
autocast (``--amp``) and with compiled rows (``--compile``):
- training throughput at 224, batch 128 (AdamW steps), and inference throughput, batch 256;
- forward+backward at 800x1333 (padded to 800x1344), batch 2, with the pyramid on tnt_mm and
  on DeiT-S blocks 3/6/9/12: time, and on CUDA the step's peak memory above the weights.
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


# ------------------------------------------------------------------------------ size sweep
# 800x1333 padded to whole patches (timm's models take multiples of 16 only)
SWEEP_SIZES = ((224, 224), (384, 384), (512, 512), (640, 960), (800, 1344))


def forward_peak_child(name: str, size, device: str) -> float:
    """Peak memory of one inference forward at ``size`` above the loaded model, in GB, measured
    in a fresh process (on the CPU: the process's peak resident memory, reset after the model
    is built, minus the resident memory then; on CUDA: the allocator's peak above the model)."""
    out = subprocess.run([sys.executable, __file__, '--sweep-child', name, *map(str, size),
                          '--device', device], capture_output=True, text=True, check=True,
                         env=os.environ.copy())
    return json.loads(out.stdout.strip().splitlines()[-1])['peak_gb']


def _status_kb(key: str) -> int:
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))


def sweep_child(name: str, size, device: str) -> None:
    forward = build(name, tuple(size), device)
    forward.module.eval()
    x = torch.randn(1, 3, *size, device=device)
    if device == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        with open('/proc/self/clear_refs', 'w') as f:  # "5": reset the peak (VmHWM) to now
            f.write('5')
        before = _status_kb('VmRSS') * 1000
    forward_job(forward, x)()
    peak = (torch.cuda.max_memory_allocated() if device == 'cuda'
            else _status_kb('VmHWM') * 1000)
    print(json.dumps(dict(peak_gb=(peak - before) / 1e9)))


def sweep_main(args) -> None:
    """Forward time (batch 1, eval) and peak memory of the three models at every size of
    ``--sweep-sizes``; a table, a JSON file and a plot of both against the input's pixels."""
    device, sizes = args.device, [tuple(s) for s in args.sweep_sizes]
    print(f'size sweep on {device}, {torch.get_num_threads()} threads, torch {torch.__version__}, '
          f'{args.rounds} interleaved rounds per size (medians)')
    results = {name: dict(seconds=[], peak_gb=[]) for name in SMALL}
    for size in sizes:
        x = torch.randn(1, 3, *size, device=device)
        models = {name: build(name, size, device) for name in SMALL}
        for forward in models.values():
            forward.module.eval()
        secs = interleaved({n: forward_job(f, x) for n, f in models.items()}, args.rounds,
                           device, label=f'fwd {size[0]}x{size[1]}', verbose=args.verbose)
        del models
        for name in SMALL:
            results[name]['seconds'].append(secs[name])
            results[name]['peak_gb'].append(
                float('nan') if args.no_memory else forward_peak_child(name, size, device))
        print(f'{size[0]}x{size[1]}: ' + ', '.join(
            f'{n} {results[n]["seconds"][-1]:.3f} s / {results[n]["peak_gb"][-1]:.2f} GB'
            for n in SMALL))
    print('ratios tnt_mm / DeiT-S (time): ' + ', '.join(
        f'{h}x{w} {a / b:.2f}x' for (h, w), a, b in zip(
            sizes, results[OURS]['seconds'], results['timm DeiT-S']['seconds'])))
    record = dict(device=device, threads=torch.get_num_threads(), torch=torch.__version__,
                  rounds=args.rounds, sizes=sizes, results=results)
    os.makedirs(osp.dirname(osp.abspath(args.plot)), exist_ok=True)
    with open(osp.splitext(args.plot)[0] + '.json', 'w') as f:
        json.dump(record, f, indent=1)
    plot_sweep(record, args.plot)
    print(f'wrote {args.plot} and {osp.splitext(args.plot)[0]}.json')


def plot_sweep(record: dict, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    sizes = [tuple(s) for s in record['sizes']]
    megapixels = [h * w / 1e6 for h, w in sizes]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, style in zip(SMALL, ('o-', 's--', '^:')):
        values = record['results'][name]
        axes[0].plot(megapixels, values['seconds'], style, label=name)
        axes[1].plot(megapixels, values['peak_gb'], style, label=name)
    for ax, ylabel in zip(axes, ('forward time, batch 1 (s)',
                                 'forward peak memory above the model (GB)')):
        ax.set_xlabel('input (megapixels)')
        ax.set_ylabel(ylabel)
        ax.set_xticks(megapixels)
        ax.set_xticklabels([f'{h}x{w}' for h, w in sizes], rotation=30, fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f'TNT-S forward on {record["device"]} ({record["threads"]} threads, torch '
                 f'{record["torch"]}), median of {record["rounds"]} interleaved rounds')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_table(results: Dict[str, Dict[str, float]], columns: List[str], fmt: str) -> None:
    """A markdown table, one row per model ('-' for a figure it lacks), and a blank line."""
    print('| model | ' + ' | '.join(columns) + ' |')
    print('|---' * (len(columns) + 1) + '|')
    for name, row in results.items():
        print(f'| {name} | ' + ' | '.join(format(row[c], fmt) if c in row else '-'
                                          for c in columns) + ' |')
    print()


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


# ------------------------------------------------------------------------------ training suite
# What users run on GPUs: training and inference throughput at 224, and a detection-size
# forward+backward with the pyramid. The default for --device cuda; on the CPU it runs with
# small sizes as a smoke test of the script (tests/test_tools/test_benchmark.py).
TRAIN_BATCH, INFER_BATCH = 128, 256
DET_SIZE, DET_BATCH = (800, 1344), 2  # 800x1333 padded to a multiple of 32, as mmdet does
PHASES = ('train', 'infer', 'det')
COMPILABLE = {'tnt_mm': OURS, 'timm-tnt': 'timm TNT-S', 'deit': 'timm DeiT-S'}


def suite_rows(backends, compile_models) -> List[str]:
    """The rows: tnt_mm per backend, the references, and the compiled ``compile_models``
    (keys of :data:`COMPILABLE`)."""
    rows = [f'{OURS} [{b}]' for b in backends] + ['timm TNT-S', 'timm DeiT-S']
    for model in compile_models or ():
        if model == 'tnt_mm':  # per backend; the C++ kernels stay out of graphs
            rows += [f'{OURS} [{b}] compiled' for b in backends if b != 'cpu']
        else:
            rows.append(f'{COMPILABLE[model]} compiled')
    return rows


def build_for_suite(name: str, img_size, device: str) -> Callable:
    """``forward(x)`` for one row at ``img_size``: the class token at 224; at detection size
    the pyramid for tnt_mm and DeiT-S (the same rescaler on DeiT-S blocks 3/6/9/12) and the
    block features for timm TNT-S (which has no pyramid)."""
    import timm

    from tnt_mm.models import TNT
    from tnt_mm.models.backbones.pyramid import PyramidRescaler
    from tnt_mm.ops import inner_backend
    torch.manual_seed(0)
    classify = tuple(img_size) == (224, 224)
    base = name.replace(' compiled', '')
    if base.startswith(OURS):
        model = TNT('small', out_type='cls_token' if classify else 'pyramid')
        backend = base[base.index('[') + 1:-1] if '[' in base else 'auto'

        def run(x):
            with inner_backend(backend):
                out = model(x)
            return out[-1] if classify else out
    elif base == 'timm TNT-S':
        model = timm.create_model('tnt_s_patch16_224', img_size=img_size)

        def run(x):
            feats = model.forward_features(x)
            return feats[:, 0] if classify else feats
    elif base == 'timm DeiT-S':
        model = timm.create_model('deit_small_patch16_224', img_size=img_size)
        if not classify:
            model.pyramid = PyramidRescaler(model.embed_dim, model.embed_dim)

        def run(x):
            if classify:
                return model.forward_features(x)[:, 0]
            return model.pyramid(model.forward_intermediates(
                x, indices=[2, 5, 8, 11], output_fmt='NCHW', intermediates_only=True))
    else:
        raise ValueError(f'unknown row {name!r}')
    model = model.to(device)
    forward = torch.compile(run, dynamic=False) if name.endswith(' compiled') else run
    forward.module = model
    return forward


def loss_of(out) -> torch.Tensor:
    outs = out if isinstance(out, (list, tuple)) else [out]
    return sum(o.float().square().mean() for o in outs)


def suite_main(args) -> None:
    device = args.device
    amp_dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16, None: None}[args.amp]
    backends = args.backends or (['reference', 'triton'] if device == 'cuda'
                                 else ['reference', 'cpu'])
    rows = suite_rows(backends, args.compile)
    train_batch, infer_batch = args.train_batch or TRAIN_BATCH, args.infer_batch or INFER_BATCH
    gpu = torch.cuda.get_device_name() if device == 'cuda' else 'none'
    print(f'device: {device} ({gpu}), torch {torch.__version__}, amp: {args.amp or "off"}, '
          f'TF32 matmul: {torch.backends.cuda.matmul.allow_tf32}, rounds: {args.rounds} x '
          f'{args.iters} steps (medians)')

    def autocast():
        return torch.autocast(device, dtype=amp_dtype, enabled=amp_dtype is not None)

    def train_job(forward, x, optimizer=None, scaler=None):
        def run():
            for _ in range(args.iters):
                with autocast():
                    loss = loss_of(forward(x))
                (scaler.scale(loss) if scaler else loss).backward()
                if optimizer is not None and scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                elif optimizer is not None:
                    optimizer.step()
                forward.module.zero_grad(set_to_none=True)
        return run

    def infer_job(forward, x):
        def run():
            with torch.inference_mode(), autocast():
                for _ in range(args.iters):
                    forward(x)
        return run

    def first_calls(jobs):
        """Warm-up, and the compile time of the compiled rows (printed, not timed)."""
        for name, job in jobs.items():
            start = time.perf_counter()
            job()
            sync(device)
            if name.endswith(' compiled'):
                print(f'  {name}: first call (compilation) {time.perf_counter() - start:.0f}s')

    results: Dict[str, Dict[str, float]] = {name: {} for name in rows}
    scaler_needed = amp_dtype == torch.float16

    def measure(jobs, title: str, column: str, figure: Callable[[float], float]) -> None:
        """Warm up, time ``jobs`` in interleaved rounds, store ``figure(median seconds)``."""
        print(f'{title}:')
        first_calls(jobs)
        secs = interleaved(jobs, args.rounds, device, warmup=0, label=title,
                           verbose=args.verbose)
        for name, seconds in secs.items():
            results[name][column] = figure(seconds)
            print(f'  {name}: {column} {results[name][column]:.3g}', flush=True)

    phases = args.phases or PHASES
    # training and inference throughput at 224
    if 'train' in phases or 'infer' in phases:
        models = {name: build_for_suite(name, (224, 224), device) for name in rows}
    if 'train' in phases:
        x = torch.randn(train_batch, 3, 224, 224, device=device)
        jobs = {}
        for name, forward in models.items():
            forward.module.train()
            optimizer = torch.optim.AdamW(forward.module.parameters(), lr=1e-4,
                                          fused=device == 'cuda')
            scaler = torch.amp.GradScaler(device) if scaler_needed else None
            jobs[name] = train_job(forward, x, optimizer, scaler)
        measure(jobs, f'training at 224, batch {train_batch}', 'train img/s @224',
                lambda seconds: train_batch * args.iters / seconds)
    if 'infer' in phases:
        x = torch.randn(infer_batch, 3, 224, 224, device=device)
        jobs = {}
        for name, forward in models.items():
            forward.module.eval()
            jobs[name] = infer_job(forward, x)
        measure(jobs, f'inference at 224, batch {infer_batch}', 'infer img/s @224',
                lambda seconds: infer_batch * args.iters / seconds)
    models = jobs = x = None
    if 'det' in phases:
        detection_phase(args, rows, results, measure, train_job, scaler_needed)
    report_suite(args, rows, results, gpu)


def detection_phase(args, rows, results, measure, train_job, scaler_needed) -> None:
    """Forward + backward at detection size, with the pyramid; on CUDA also the step's
    peak memory."""
    device = args.device
    det_size = tuple(args.det_size or DET_SIZE)
    det_batch = args.det_batch or DET_BATCH
    label = f'{det_size[0]}x{det_size[1]}'
    models = {name: build_for_suite(name, det_size, device) for name in rows}
    x = torch.randn(det_batch, 3, *det_size, device=device)
    jobs = {}
    for name, forward in models.items():
        forward.module.train()
        scaler = torch.amp.GradScaler(device) if scaler_needed else None
        jobs[name] = train_job(forward, x, scaler=scaler)
    measure(jobs, f'forward+backward at {label}, batch {det_batch}', f'fwd+bwd s @{label}',
            lambda seconds: seconds / args.iters)
    if device == 'cuda':
        # the step's peak above what is held before it (every model's weights): activations
        # and gradients
        for name, job in jobs.items():
            torch.cuda.synchronize()
            held = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            job()
            torch.cuda.synchronize()
            results[name][f'peak GB @{label}'] = (torch.cuda.max_memory_allocated() - held) / 1e9


def report_suite(args, rows, results, gpu: str) -> None:
    columns = list(results[rows[0]])
    print(f'\n{gpu}, amp {args.amp or "off"}\n')
    print_table(results, columns, '.3g')
    references = [r for r in ('timm DeiT-S', 'timm TNT-S compiled', 'timm TNT-S') if r in rows]
    for mine in (r for r in rows if r.startswith(OURS)):
        for other in references:
            print(f'{mine} / {other}: ' + ', '.join(
                f'{c} {results[mine][c] / results[other][c]:.2f}x' for c in columns))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(device=gpu, amp=args.amp, results=results), f, indent=1)


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
    parser.add_argument('--compile', nargs='*', choices=sorted(COMPILABLE), metavar='MODEL',
                        help='add rows under torch.compile: the CPU suite, tnt_mm TNT-S forward '
                        'only; the training suite, the MODELs of '
                        f'{sorted(COMPILABLE)} (all without a MODEL). The compile time is '
                        'printed, not timed')
    parser.add_argument('--detector', action='store_true',
                        help='also time a Faster R-CNN TNT-S training step at 800x1333, with and '
                        'without with_cp (separate processes)')
    parser.add_argument('--only-detector', action='store_true',
                        help='run only the Faster R-CNN training-step measurement')
    parser.add_argument('--suite', choices=('cpu', 'training'),
                        help='cpu: the CPU table (inference at 224 batch 8, 800x1216 batch 1, '
                        'peaks per process); training: what GPU users run (training and '
                        'inference throughput at 224, forward+backward with the pyramid at '
                        '800x1344). Defaults to training on cuda, cpu on the CPU')
    parser.add_argument('--amp', choices=('bf16', 'fp16'),
                        help='training suite: autocast dtype (fp16 with a GradScaler)')
    parser.add_argument('--backends', nargs='+', choices=('reference', 'cpu', 'triton', 'auto'),
                        help='training suite: tnt_mm inner-transformer backends, one row each '
                        '(default: reference triton on cuda, reference cpu on the CPU)')
    parser.add_argument('--iters', type=int, default=5,
                        help='training suite: steps per timed job. Defaults to 5')
    parser.add_argument('--train-batch', type=int, help=f'default {TRAIN_BATCH}')
    parser.add_argument('--infer-batch', type=int, help=f'default {INFER_BATCH}')
    parser.add_argument('--det-size', type=int, nargs=2, metavar=('H', 'W'),
                        help=f'default {DET_SIZE[0]} {DET_SIZE[1]}')
    parser.add_argument('--det-batch', type=int, help=f'default {DET_BATCH}')
    parser.add_argument('--phases', nargs='+', choices=PHASES,
                        help='training suite: training at 224, inference at 224, fwd+bwd at '
                             'detection size (default: all three)')
    parser.add_argument('--json', help='training suite: also write the results here')
    parser.add_argument('--sweep', action='store_true',
                        help='forward time and peak memory against input size, with a plot')
    parser.add_argument('--sweep-sizes', type=int, nargs=2, action='append', metavar=('H', 'W'),
                        help='sizes of --sweep (repeat the option; default 224 to 800x1344)')
    parser.add_argument('--plot', default='work_dirs/bench/forward_vs_size.png',
                        help='--sweep: the plot to write (its numbers go next to it as .json)')
    parser.add_argument('--sweep-child', nargs=3, help=argparse.SUPPRESS)
    parser.add_argument('--child', help=argparse.SUPPRESS)
    parser.add_argument('--detector-child', type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.compile == []:  # a bare --compile: every model
        args.compile = list(COMPILABLE)
    if args.child:
        child(args.child, args.device)
        return
    if args.sweep_child:
        name, height, width = args.sweep_child
        sweep_child(name, (int(height), int(width)), args.device)
        return
    if args.detector_child is not None:
        detector_child(bool(args.detector_child), args.device)
        return
    if args.only_detector:
        detector_table(args.device)
        return
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: torch sees no CUDA GPU')
    if args.sweep:
        args.sweep_sizes = args.sweep_sizes or SWEEP_SIZES
        sweep_main(args)
        return
    if (args.suite or ('training' if args.device == 'cuda' else 'cpu')) == 'training':
        suite_main(args)
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
    print_table(results, columns, '.2f')
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
