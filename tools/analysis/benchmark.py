#!/usr/bin/env python
"""Speed and memory of tnt_mm's TNT-S against timm's TNT-S (same weights) and timm's DeiT-S.

    python tools/analysis/benchmark.py cpu [--rounds 5] [--no-memory] [--verbose]   # make bench
    python tools/analysis/benchmark.py gpu --amp bf16 [--compile] [--backends triton ...]
    python tools/analysis/benchmark.py sweep --plot docs/images/forward_vs_size.png
    python tools/analysis/benchmark.py detector         # Faster R-CNN step, with(out) with_cp
    python tools/analysis/benchmark.py profile [...]    # tools/analysis/step_profile.py

Without a sub-command: ``gpu`` where torch sees a GPU, else ``cpu``.

One model factory (:func:`build`) makes every row, one runner (:func:`interleaved`) times every
figure, one child entry point (``child``) measures peak memory in a fresh process, and one
reader (:class:`PeakMemory`) reads it. All timings of a table come from one process, in
interleaved rounds (every row once per round, in a seeded shuffled order), and the tables show
medians and ratios within the run: the machines are noisy, ratios are what compare.

Rows: ``tnt_mm TNT-S`` (the ``auto`` backend), ``tnt_mm TNT-S [BACKEND]`` (``reference``,
``cpu``, ``triton``, ``auto``; ``[triton, fused]`` adds the opt-in fused words -> sentence norm
and update and ``low_precision_words``), each optionally `` with_cp`` or `` compiled``;
``timm TNT-S`` and ``timm DeiT-S`` (optionally `` compiled``). Every TNT carries timm's TNT-S
weights.

``cpu`` (the CPU table):
- forward throughput at 224x224, batch 8 (images/s), also with the reference backend;
- forward time and forward+backward time at 800x1216, batch 1;
- peak memory of forward+backward at 800x1216, each row in a child process of its own
  (``VmHWM``: ``ru_maxrss`` of a child started by a large parent would inherit its peak).
The compared outputs: the raw block features at 800x1216 (timm's models have no pyramid) and
the normalised class token at 224.

``gpu`` (what users run on GPUs; on the CPU at toy sizes it checks the script), optionally
under autocast (``--amp``) and with compiled rows (``--compile``):
- training throughput at 224, batch 128 (AdamW steps), and inference throughput, batch 256;
- forward+backward at 800x1333 (padded to 800x1344), batch 2, with the pyramid on tnt_mm and
  on DeiT-S blocks 3/6/9/12: time, and on CUDA the step's peak memory above the weights.

``sweep``: forward time (batch 1) and peak memory above the model against the input size, a
table, a JSON file and a plot. ``detector``: one Faster R-CNN TNT-S training step at 800x1333
with and without ``with_cp``, each in a child process (``tools/analysis/detector_step.py``
compares it with ResNet-50 and DeiT-S). ``profile``: kernels, bytes and host syncs of the
``gpu`` suite's steps counted on the CPU (``tools/analysis/step_profile.py``, its options).
"""
import argparse
import importlib.util
import json
import os
import os.path as osp
import random
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(osp.dirname(HERE))
OURS = 'tnt_mm TNT-S'
SMALL = (OURS, 'timm TNT-S', 'timm DeiT-S')
WITH_CP = f'{OURS} with_cp'
COMPILED = f'{OURS} compiled'
REFERENCE = f'{OURS} [reference]'
AMP = {'bf16': torch.bfloat16, 'fp16': torch.float16, None: None}

# cpu
CPU_DET_SIZE = (800, 1216)
# gpu: training and inference at 224, forward+backward at detection size with the pyramid
TRAIN_BATCH, INFER_BATCH = 128, 256
DET_SIZE, DET_BATCH = (800, 1344), 2  # 800x1333 padded to a multiple of 32, as mmdet does
PHASES = ('train', 'infer', 'det')
COMPILABLE = {'tnt_mm': OURS, 'timm-tnt': 'timm TNT-S', 'deit': 'timm DeiT-S'}
# sweep: 800x1333 padded to whole patches (timm's models take multiples of 16 only)
SWEEP_SIZES = ((224, 224), (384, 384), (512, 512), (640, 960), (800, 1344))


# ------------------------------------------------------------------ models
def parse_row(name: str) -> dict:
    """``'tnt_mm TNT-S [triton, fused] compiled'`` -> its model, backend and options."""
    base, compiled, with_cp = name, False, False
    if base.endswith(' compiled'):
        base, compiled = base[:-len(' compiled')], True
    if base.endswith(' with_cp'):
        base, with_cp = base[:-len(' with_cp')], True
    options = ['auto']
    if '[' in base:
        base, _, inside = base.partition(' [')
        options = inside.rstrip(']').split(', ')
    if base not in SMALL or (base != OURS and (with_cp or options != ['auto'])):
        raise ValueError(f'unknown row {name!r}: one of {SMALL}, tnt_mm\'s with [BACKEND], '
                         f'[BACKEND, fused] or with_cp, any with compiled')
    return dict(model=base, backend=options[0], fused='fused' in options[1:],
                with_cp=with_cp, compiled=compiled)


OUTPUTS = ('cls', 'features', 'pyramid')


def build(name: str, img_size, device: str, output: Optional[str] = None,
          compile_mode: Optional[str] = None) -> Callable:
    """``forward(x)`` of the row ``name`` at ``img_size``, its model as ``forward.module``.

    ``output``: ``'cls'`` the class token (tnt_mm's normalised, as its classifier has it),
    ``'features'`` the last block's tokens, ``'pyramid'`` the four FPN levels of tnt_mm and of
    DeiT-S (the same rescaler on its blocks 3/6/9/12; timm's TNT-S, which has none, its
    features); by default the class token at 224, else the features. Every TNT carries the
    weights of one seeded timm TNT-S. ``compile_mode``: ``torch.compile``'s ``mode`` for a
    compiled row (``'reduce-overhead'``: replayed CUDA graphs, each call a new step)."""
    import timm

    from tnt_mm.models import TNT
    from tnt_mm.models.backbones.pyramid import PyramidRescaler
    from tnt_mm.models.backbones.tnt_convert import convert_state_dict
    from tnt_mm.ops import fused_norm, inner_backend
    row = parse_row(name)
    output = output or ('cls' if tuple(img_size) == (224, 224) else 'features')
    if output not in OUTPUTS:
        raise ValueError(f'output={output!r}: one of {OUTPUTS}')
    classify, pyramid = output == 'cls', output == 'pyramid'
    torch.manual_seed(0)
    reference = timm.create_model('tnt_s_patch16_224')  # the weights everybody gets
    if row['model'] == OURS:
        out_type = 'cls_token' if classify else 'pyramid' if pyramid else 'featmap'
        model = TNT('small', out_type=out_type, with_cp=row['with_cp'],
                    low_precision_words=row['fused'])
        state, _ = convert_state_dict(reference.state_dict())
        own = model.state_dict()
        missing, _ = model.load_state_dict({k[len('backbone.'):]: v for k, v in state.items()
                                            if k[len('backbone.'):] in own}, strict=False)
        assert all(k.startswith('pyramid.') for k in missing), missing  # timm's has none

        def run(x):
            with inner_backend(row['backend']), fused_norm(row['fused']):
                out = model(x)
            return out[-1] if classify or not pyramid else out
    elif row['model'] == 'timm TNT-S':
        # timm's TNT asserts its construction size: build it at the size it will see
        model = timm.create_model('tnt_s_patch16_224', img_size=img_size)
        from timm.models.tnt import checkpoint_filter_fn
        model.load_state_dict(checkpoint_filter_fn(reference.state_dict(), model))

        def run(x):
            feats = model.forward_features(x)
            return feats[:, 0] if classify else feats
    else:
        model = timm.create_model('deit_small_patch16_224', img_size=img_size)
        if pyramid:
            model.pyramid = PyramidRescaler(model.embed_dim, model.embed_dim)

        def run(x):
            if classify or not pyramid:
                feats = model.forward_features(x)
                return feats[:, 0] if classify else feats
            return model.pyramid(model.forward_intermediates(
                x, indices=[2, 5, 8, 11], output_fmt='NCHW', intermediates_only=True))
    model = model.to(device)
    forward = run
    if row['compiled']:
        # dynamic=False: one static graph per input size, as each size is timed on its own
        compiled = torch.compile(run, dynamic=False, mode=compile_mode)

        def replayed(x):  # a new step: the graphs may reuse the last replay's outputs
            torch.compiler.cudagraph_mark_step_begin()
            return compiled(x)
        forward = replayed if compile_mode == 'reduce-overhead' else compiled
    forward.module = model
    return forward


def loss_of(out) -> torch.Tensor:
    outs = out if isinstance(out, (list, tuple)) else [out]
    return sum(o.float().square().mean() for o in outs)


# ------------------------------------------------------------------ the runner
def sync(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def timed(fn: Callable[[], None], device: str) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def step_job(forward, x, train: bool, iters: int = 1, amp: Optional[torch.dtype] = None,
             optimizer=None, scaler=None) -> Callable[[], None]:
    """``iters`` steps of ``forward`` on ``x``: inference (``inference_mode``), or training
    (the loss's backward; an optimizer step where one is given, through ``scaler`` with fp16),
    under autocast to ``amp`` where given."""
    device = x.device.type

    def autocast():
        return torch.autocast(device, dtype=amp, enabled=amp is not None)

    def infer():
        with torch.inference_mode(), autocast():
            for _ in range(iters):
                forward(x)

    def train_steps():
        for _ in range(iters):
            with autocast():
                loss = loss_of(forward(x))
            (scaler.scale(loss) if scaler else loss).backward()
            if optimizer is not None and scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            elif optimizer is not None:
                optimizer.step()
            forward.module.zero_grad(set_to_none=True)
    return train_steps if train else infer


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


def print_table(results: Dict[str, Dict[str, float]], columns: List[str], fmt: str) -> None:
    """A markdown table, one row per model ('-' for a figure it lacks), and a blank line."""
    print('| model | ' + ' | '.join(columns) + ' |')
    print('|---' * (len(columns) + 1) + '|')
    for name, row in results.items():
        print(f'| {name} | ' + ' | '.join(format(row[c], fmt) if c in row else '-'
                                          for c in columns) + ' |')
    print()


def print_ratios(results: Dict[str, Dict[str, float]], mine: Sequence[str],
                 references: Sequence[str]) -> None:
    for a in (r for r in mine if r in results):
        for b in (r for r in references if r in results):
            shared = [c for c in results[a] if c in results[b]]
            if not shared:
                continue
            print(f'{a} / {b}: ' + ', '.join(
                f'{c} {results[a][c] / results[b][c]:.2f}x' for c in shared))


# ------------------------------------------------------------------ memory, in a child process
def _status_kb(key: str) -> int:
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))


class PeakMemory:
    """The peak memory of what runs inside the block, the one reader of every memory figure:
    on CUDA the allocator's peak; on the CPU the process's peak resident memory (``VmHWM``).
    ``total_gb`` is the whole peak, ``above_gb`` the peak above what was held on entry (on the
    CPU ``reset_cpu`` resets the peak to now first: ``/proc/self/clear_refs``)."""

    def __init__(self, device: str, reset_cpu: bool = False):
        self.device, self.reset_cpu = device, reset_cpu

    def __enter__(self) -> 'PeakMemory':
        if self.device == 'cuda':
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.before = torch.cuda.memory_allocated()
        else:
            if self.reset_cpu:
                with open('/proc/self/clear_refs', 'w') as f:  # "5": VmHWM to now
                    f.write('5')
            self.before = _status_kb('VmRSS') * 1000
        return self

    def __exit__(self, *exc) -> None:
        if self.device == 'cuda':
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            peak = _status_kb('VmHWM') * 1000
        self.total_gb, self.above_gb = peak / 1e9, (peak - self.before) / 1e9


def in_child(*args: str, device: str) -> dict:
    """Run ``benchmark.py child ARGS`` in a fresh process; the figures it prints last."""
    out = subprocess.run([sys.executable, osp.abspath(__file__), 'child', *args, '--device',
                          device], capture_output=True, text=True, check=True,
                         env=os.environ.copy())
    return json.loads(out.stdout.strip().splitlines()[-1])


def child_main(args) -> None:
    """One measurement in this fresh process, printed as JSON: ``train NAME H W`` (the peak of a
    forward+backward, whole process), ``forward NAME H W`` (an inference forward's peak above
    the built model), ``detector WITH_CP`` (a Faster R-CNN training step: time and peak)."""
    device = args.device
    if args.what == 'detector':
        seconds, peak = detector_step(bool(int(args.name)), device)
        print(json.dumps(dict(seconds=seconds, peak_gb=peak.total_gb)))
        return
    size = (int(args.size[0]), int(args.size[1]))
    forward = build(args.name, size, device)
    train = args.what == 'train'
    forward.module.train(train)
    job = step_job(forward, torch.randn(1, 3, *size, device=device), train=train)
    with PeakMemory(device, reset_cpu=not train) as peak:
        job()
    print(json.dumps(dict(peak_gb=peak.total_gb if train else peak.above_gb)))


def detector_step(with_cp: bool, device: str):
    """One Faster R-CNN TNT-S train step at 800x1333 after a warm-up step: seconds and peak."""
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
    with PeakMemory(device) as peak:
        seconds = timed(step, device)
    return seconds, peak


# ------------------------------------------------------------------ cpu
def cpu_main(args) -> None:
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
                step_job(models[COMPILED], torch.randn(1, 3, *img_size, device=device), False)()
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
    secs = interleaved({n: step_job(f, x224, False) for n, f in models.items()},
                       args.rounds_224, device, label='fwd 224', verbose=args.verbose)
    for name, s in secs.items():
        results[name]['img/s @224'] = args.batch / s
    del models

    xdet = torch.randn(1, 3, *CPU_DET_SIZE, device=device)
    label = f'{CPU_DET_SIZE[0]}x{CPU_DET_SIZE[1]}'
    models = eval_models(CPU_DET_SIZE)
    secs = interleaved({n: step_job(f, xdet, False) for n, f in models.items()}, args.rounds,
                       device, label=f'fwd {label}', verbose=args.verbose)
    for name, s in secs.items():
        results[name][f'fwd s @{label}'] = s
    models.pop(COMPILED, None)  # training under torch.compile is not measured here
    models.pop(REFERENCE, None)  # kernels off: compared in inference only, to keep the run short
    if not args.no_train:
        for forward in models.values():
            forward.module.train()
        secs = interleaved({n: step_job(f, xdet, True) for n, f in models.items()},
                           max(1, args.rounds // 2), device, label=f'fwd+bwd {label}',
                           verbose=args.verbose)
        for name, s in secs.items():
            results[name][f'fwd+bwd s @{label}'] = s
    del models
    if not args.no_memory:
        for name in memory_rows:
            results[name][f'peak GB fwd+bwd @{label}'] = in_child(
                'train', name, *map(str, CPU_DET_SIZE), device=device)['peak_gb']
    results = {name: row for name, row in results.items() if row}  # with_cp: memory only
    columns = list(results[OURS])
    print()
    print_table(results, columns, '.2f')
    print_ratios(results, (OURS, REFERENCE, WITH_CP, COMPILED), SMALL[1:])


# ------------------------------------------------------------------ gpu
def suite_rows(backends, compile_models) -> List[str]:
    """The rows: tnt_mm per backend, the references, and the compiled ``compile_models``
    (keys of :data:`COMPILABLE`)."""
    rows = [f'{OURS} [{b.replace("-fused", ", fused")}]' for b in backends] + [
        'timm TNT-S', 'timm DeiT-S']
    for model in compile_models or ():
        if model == 'tnt_mm':  # per backend; the C++ kernels and the fused norm stay eager
            rows += [f'{OURS} [{b}] compiled' for b in backends
                     if b not in ('cpu', 'triton-fused')]
        else:
            rows.append(f'{COMPILABLE[model]} compiled')
    return rows


def gpu_main(args) -> None:
    device = args.device
    amp = AMP[args.amp]
    backends = args.backends or (['reference', 'triton'] if device == 'cuda'
                                 else ['reference', 'cpu'])
    rows = suite_rows(backends, args.compile)
    train_batch, infer_batch = args.train_batch or TRAIN_BATCH, args.infer_batch or INFER_BATCH
    det_size, det_batch = tuple(args.det_size or DET_SIZE), args.det_batch or DET_BATCH
    cls_size = tuple(args.cls_size)
    at = '224' if cls_size == (224, 224) else f'{cls_size[0]}x{cls_size[1]}'
    gpu = torch.cuda.get_device_name() if device == 'cuda' else 'none'
    print(f'device: {device} ({gpu}), torch {torch.__version__}, amp: {args.amp or "off"}, '
          f'TF32 matmul: {torch.backends.cuda.matmul.allow_tf32}, rounds: {args.rounds} x '
          f'{args.iters} steps (medians)')
    results: Dict[str, Dict[str, float]] = {name: {} for name in rows}
    scaler_needed = amp == torch.float16

    def measure(jobs, title: str, column: str, figure: Callable[[float], float]) -> None:
        """Warm up (the compiled rows' first call, their compilation, printed), time ``jobs``
        in interleaved rounds, store ``figure(median seconds)``."""
        print(f'{title}:')
        for name, job in jobs.items():
            start = time.perf_counter()
            job()
            sync(device)
            if name.endswith(' compiled'):
                print(f'  {name}: first call (compilation) {time.perf_counter() - start:.0f}s')
        secs = interleaved(jobs, args.rounds, device, warmup=0, label=title,
                           verbose=args.verbose)
        for name, seconds in secs.items():
            results[name][column] = figure(seconds)
            print(f'  {name}: {column} {results[name][column]:.3g}', flush=True)

    def train_jobs(models, size, batch, optimize: bool):
        x = torch.randn(batch, 3, *size, device=device)
        jobs = {}
        for name, forward in models.items():
            forward.module.train()
            optimizer = torch.optim.AdamW(forward.module.parameters(), lr=1e-4,
                                          fused=device == 'cuda') if optimize else None
            scaler = torch.amp.GradScaler(device) if scaler_needed else None
            jobs[name] = step_job(forward, x, True, args.iters, amp, optimizer, scaler)
        return jobs

    phases = args.phases or PHASES
    if 'train' in phases or 'infer' in phases:
        models = {name: build(name, cls_size, device, 'cls', args.compile_mode)
                  for name in rows}
    if 'train' in phases:
        measure(train_jobs(models, cls_size, train_batch, optimize=True),
                f'training at {at}, batch {train_batch}', f'train img/s @{at}',
                lambda seconds: train_batch * args.iters / seconds)
    if 'infer' in phases:
        x = torch.randn(infer_batch, 3, *cls_size, device=device)
        jobs = {}
        for name, forward in models.items():
            forward.module.eval()
            jobs[name] = step_job(forward, x, False, args.iters, amp)
        measure(jobs, f'inference at {at}, batch {infer_batch}', f'infer img/s @{at}',
                lambda seconds: infer_batch * args.iters / seconds)
    models = jobs = x = None
    if 'det' in phases:
        label = f'{det_size[0]}x{det_size[1]}'
        jobs = train_jobs({name: build(name, det_size, device, 'pyramid', args.compile_mode)
                           for name in rows}, det_size, det_batch, optimize=False)
        measure(jobs, f'forward+backward at {label}, batch {det_batch}', f'fwd+bwd s @{label}',
                lambda seconds: seconds / args.iters)
        if device == 'cuda':  # above what is held before it (every model's weights)
            for name, job in jobs.items():
                with PeakMemory(device) as peak:
                    job()
                results[name][f'peak GB @{label}'] = peak.above_gb
    print(f'\n{gpu}, amp {args.amp or "off"}\n')
    print_table(results, list(results[rows[0]]), '.3g')
    print_ratios(results, [r for r in rows if r.startswith(OURS)],
                 ('timm DeiT-S', 'timm DeiT-S compiled', 'timm TNT-S compiled', 'timm TNT-S'))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(device=gpu, amp=args.amp, results=results), f, indent=1)


# ------------------------------------------------------------------ sweep
def sweep_main(args) -> None:
    """Forward time (batch 1, eval) and peak memory of the three models at every size of
    ``--sizes``; a table, a JSON file and a plot of both against the input's pixels."""
    device, sizes = args.device, [tuple(s) for s in args.sizes or SWEEP_SIZES]
    print(f'size sweep on {device}, {torch.get_num_threads()} threads, torch {torch.__version__}, '
          f'{args.rounds} interleaved rounds per size (medians)')
    results = {name: dict(seconds=[], peak_gb=[]) for name in SMALL}
    for size in sizes:
        x = torch.randn(1, 3, *size, device=device)
        models = {name: build(name, size, device) for name in SMALL}
        for forward in models.values():
            forward.module.eval()
        secs = interleaved({n: step_job(f, x, False) for n, f in models.items()}, args.rounds,
                           device, label=f'fwd {size[0]}x{size[1]}', verbose=args.verbose)
        del models
        for name in SMALL:
            results[name]['seconds'].append(secs[name])
            results[name]['peak_gb'].append(float('nan') if args.no_memory else in_child(
                'forward', name, *map(str, size), device=device)['peak_gb'])
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


# ------------------------------------------------------------------ detector, profile
def detector_main(args) -> None:
    print('Faster R-CNN + FPN, TNT-S, one training step (AdamW) at 800x1333, batch 1:')
    print('| backbone | step s | peak GB |')
    print('|---|---|---|')
    for with_cp in (False, True):
        result = in_child('detector', str(int(with_cp)), device=args.device)
        print(f'| TNT-S{" with_cp" if with_cp else ""} | {result["seconds"]:.2f} '
              f'| {result["peak_gb"]:.2f} |')


def profile_main(argv: Sequence[str]) -> None:
    spec = importlib.util.spec_from_file_location('step_profile',
                                                  osp.join(HERE, 'step_profile.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(list(argv))


# ------------------------------------------------------------------ the command line
COMMANDS = ('cpu', 'gpu', 'sweep', 'detector', 'profile', 'child')


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                  formatter_class=argparse.RawDescriptionHelpFormatter,
                                  epilog=__doc__.split('\n\n')[1])
    commands = top.add_subparsers(dest='command', metavar='{cpu,gpu,sweep,detector,profile}')

    def command(name: str, help_: Optional[str], rounds: int) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_) if help_ else commands.add_parser(name)
        sub.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
        sub.add_argument('--rounds', type=int, default=rounds,
                         help=f'timed interleaved rounds per figure. Defaults to {rounds}')
        sub.add_argument('--verbose', action='store_true', help='print every round\'s time')
        return sub

    cpu = command('cpu', 'the CPU table: inference at 224, 800x1216 forward(+backward), '
                  'peaks per process', 5)
    cpu.add_argument('--rounds-224', type=int, default=20,
                     help='timed rounds at 224, where one takes a second or less and the median '
                     'needs more of them to settle. Defaults to 20')
    cpu.add_argument('--batch', type=int, default=8, help='batch at 224. Defaults to 8')
    cpu.add_argument('--no-memory', action='store_true', help='skip the memory children')
    cpu.add_argument('--no-train', action='store_true', help='skip forward+backward timing')
    cpu.add_argument('--compile', action='store_true',
                     help='add tnt_mm TNT-S under torch.compile (forward only)')

    gpu = command('gpu', 'what GPU users run: training and inference throughput at 224, '
                  'forward+backward with the pyramid at 800x1344', 5)
    gpu.add_argument('--amp', choices=('bf16', 'fp16'),
                     help='autocast dtype (fp16 with a GradScaler)')
    gpu.add_argument('--backends', nargs='+',
                     choices=('reference', 'cpu', 'triton', 'triton-fused', 'auto'),
                     help='tnt_mm inner-transformer backends, one row each; triton-fused: with '
                     'the opt-in fused words -> sentence norm and update and '
                     'low_precision_words (default: reference triton on cuda, reference cpu on '
                     'the CPU)')
    gpu.add_argument('--compile', nargs='*', choices=sorted(COMPILABLE), metavar='MODEL',
                     help=f'add rows under torch.compile: the MODELs of {sorted(COMPILABLE)} '
                     '(all without a MODEL). The compile time is printed, not timed')
    gpu.add_argument('--compile-mode', choices=('reduce-overhead', 'max-autotune',
                                                'max-autotune-no-cudagraphs'),
                     help='torch.compile\'s mode for the compiled rows (reduce-overhead: '
                     'Inductor replays each step as CUDA graphs). Defaults to its default')
    gpu.add_argument('--iters', type=int, default=5, help='steps per timed job. Defaults to 5')
    gpu.add_argument('--cls-size', type=int, nargs=2, default=(224, 224), metavar=('H', 'W'),
                     help='the size of the training and inference phases (class token). '
                     'Defaults to 224 224')
    gpu.add_argument('--train-batch', type=int, help=f'default {TRAIN_BATCH}')
    gpu.add_argument('--infer-batch', type=int, help=f'default {INFER_BATCH}')
    gpu.add_argument('--det-size', type=int, nargs=2, metavar=('H', 'W'),
                     help=f'default {DET_SIZE[0]} {DET_SIZE[1]}')
    gpu.add_argument('--det-batch', type=int, help=f'default {DET_BATCH}')
    gpu.add_argument('--phases', nargs='+', choices=PHASES,
                     help='training at 224, inference at 224, fwd+bwd at detection size '
                     '(default: all three)')
    gpu.add_argument('--json', help='also write the results here')

    sweep = command('sweep', 'forward time and peak memory against input size, with a plot', 5)
    sweep.add_argument('--sizes', type=int, nargs=2, action='append', metavar=('H', 'W'),
                       help='the sizes (repeat the option; default 224 to 800x1344)')
    sweep.add_argument('--no-memory', action='store_true', help='skip the memory children')
    sweep.add_argument('--plot', default='work_dirs/bench/forward_vs_size.png',
                       help='the plot to write (its numbers go next to it as .json)')

    command('detector', 'one Faster R-CNN TNT-S training step at 800x1333, with and without '
            'with_cp, each in its own process', 1)
    commands.add_parser('profile', add_help=False,
                        help='kernels, bytes, host syncs of the gpu steps, counted on the CPU '
                        '(tools/analysis/step_profile.py; its options)')
    child = command('child', None, 1)
    child.add_argument('what', choices=('train', 'forward', 'detector'))
    child.add_argument('name')
    child.add_argument('size', nargs='*')
    return top


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS and argv[0] not in ('-h', '--help'):
        argv.insert(0, 'gpu' if torch.cuda.is_available() else 'cpu')
    if argv[0] == 'profile':  # step_profile.py parses its own options
        profile_main(argv[1:])
        return
    args = parser().parse_args(argv)
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: torch sees no CUDA GPU')
    if args.command == 'gpu' and args.compile == []:  # a bare --compile: every model
        args.compile = list(COMPILABLE)
    dict(cpu=cpu_main, gpu=gpu_main, sweep=sweep_main, detector=detector_main,
         child=child_main)[args.command](args)


if __name__ == '__main__':
    main()
