#!/usr/bin/env python
"""Host time of a training step of tnt_mm's TNT-S against timm's DeiT-S: the Python, the
dispatch and the autograd engine, on real CPU tensors, with the computation taken out.

    python tools/analysis/host_time.py [--backends triton reference] [--amp bf16] [--rounds 25]

``step_profile.py`` times its steps on fake tensors, where fake-tensor propagation (tens of
microseconds an op) is most of the time and the backward runs in a Python autograd engine. This
tool measures what a GPU's host runs instead, as closely as a CPU can:

- both models keep their structure (depth, heads, every op and parameter tensor) and shrink
  their width: outer width 48 (6 heads of 8) for TNT-S and DeiT-S, TNT's words 8 wide (4
  heads); 32x32 images (2x2 patches), batch 1. The kernels then take a few microseconds each,
  about what a CUDA launch costs the host;
- the Triton backend runs as on a GPU up to the launch, which is skipped (its outputs are left
  uninitialised): the backend is chosen as on CUDA, the autograd path and every tensor op
  around the launches run;
- one step: forward under CPU autocast (``--amp``), the benchmark's loss, ``backward()`` in
  autograd's C++ engine, ``zero_grad(set_to_none=True)``. No optimizer: on a GPU it is two
  fused AdamW launches for either model; on the CPU it would be per-tensor loops;
- the rows alternate, ``--rounds`` rounds of ``--steps`` steps after warm-up; median and range
  of the per-step time per round.

What it leaves out: the Triton launcher's own cost (it grows with the kernel's arguments) and
CUDA's launch latency; ``tools/analysis/gpu_trace.py`` measures the real thing on a GPU.
"""
import argparse
import contextlib
import json
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch

OURS, DEIT = 'tnt_mm TNT-S', 'timm DeiT-S'
BACKENDS = ('triton', 'triton-fused', 'reference')
AMP = {'bf16': torch.bfloat16, 'none': None}
IMG_SIZE, INNER_WIDTH, OUTER_WIDTH = 32, 8, 48


def row_names(backends: Sequence[str]) -> List[str]:
    return [f'{OURS} [{b.replace("-fused", ", fused")}]' for b in backends] + [DEIT]


@contextlib.contextmanager
def launches_skipped():
    """The Triton backend on CPU tensors as on a GPU, its launches skipped: the backends see
    Triton's interpreter (so that ``triton`` may take CPU tensors), and ``_launch`` does
    nothing."""
    from tnt_mm.ops import triton_kernels
    saved = triton_kernels._launch, triton_kernels.interpreting
    triton_kernels._launch = lambda launch: None
    triton_kernels.interpreting = lambda: True
    try:
        yield
    finally:
        triton_kernels._launch, triton_kernels.interpreting = saved


def build(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The narrow model of row ``name``: ``forward(x)`` -> the class token; ``.module``."""
    import timm

    from tnt_mm.models import TNT
    from tnt_mm.ops import fused_norm, inner_backend
    torch.manual_seed(0)
    if name == DEIT:
        model = timm.create_model('deit_small_patch16_224', img_size=IMG_SIZE,
                                  embed_dim=OUTER_WIDTH)

        def forward(x):
            return model.forward_features(x)[:, 0]
    else:
        backend, _, option = name[len(OURS) + 2:-1].partition(', ')
        fused = option == 'fused'
        arch = dict(inner_dim=INNER_WIDTH, inner_heads=4, outer_dim=OUTER_WIDTH, outer_heads=6,
                    depth=12)
        model = TNT(arch, out_type='cls_token', pretrain_img_size=IMG_SIZE,
                    low_precision_words=fused)

        def forward(x):
            with inner_backend(backend), fused_norm(fused):
                return model(x)[-1]
    forward.module = model.train()
    return forward


def loss_of(forward: Callable, x: torch.Tensor, amp: Optional[torch.dtype]) -> torch.Tensor:
    """The forward under autocast and benchmark.py's loss."""
    with torch.autocast('cpu', dtype=amp, enabled=amp is not None):
        out = forward(x)
    return out.float().square().mean()


def make_step(forward: Callable, amp: Optional[torch.dtype]) -> Callable[[], None]:
    x = torch.randn(1, 3, IMG_SIZE, IMG_SIZE)

    def step():
        loss_of(forward, x, amp).backward()
        forward.module.zero_grad(set_to_none=True)
    return step


def time_rows(steps_by_row: Dict[str, Callable], rounds: int, steps: int,
              warmup: int = 3) -> Dict[str, dict]:
    """Per row: median, min and max over ``rounds`` of the mean ms per step, rows alternating."""
    for step in steps_by_row.values():
        for _ in range(warmup):
            step()
    times: Dict[str, List[float]] = {name: [] for name in steps_by_row}
    for _ in range(rounds):
        for name, step in steps_by_row.items():
            start = time.perf_counter()
            for _ in range(steps):
                step()
            times[name].append((time.perf_counter() - start) / steps * 1e3)
    return {name: dict(ms=statistics.median(t), min_ms=min(t), max_ms=max(t))
            for name, t in times.items()}


def autograd_nodes(forward: Callable, amp: Optional[torch.dtype]) -> int:
    """Nodes of one training step's autograd graph, AccumulateGrad included."""
    seen, stack = set(), [loss_of(forward, torch.randn(1, 3, IMG_SIZE, IMG_SIZE), amp).grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return len(seen)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--backends', nargs='+', choices=BACKENDS, default=['triton'],
                        help='tnt_mm inner-transformer backends, one row each (triton-fused: '
                        'the opt-in fused norm and update and low_precision_words). Defaults '
                        'to triton')
    parser.add_argument('--amp', choices=sorted(AMP), default='bf16',
                        help='CPU autocast dtype. Defaults to bf16')
    parser.add_argument('--rounds', type=int, default=25)
    parser.add_argument('--steps', type=int, default=5, help='steps per round')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch CPU threads (1: the kernels stay on the host thread)')
    parser.add_argument('--json', help='write the rows here')
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.steps < 1:
        parser.error(f'--rounds {args.rounds} and --steps {args.steps} must be at least 1')
    amp, threads = AMP[args.amp], torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        with launches_skipped():
            forwards = {name: build(name) for name in row_names(args.backends)}
            nodes = {name: autograd_nodes(forward, amp) for name, forward in forwards.items()}
            rows = time_rows({name: make_step(forward, amp) for name, forward in forwards.items()},
                             args.rounds, args.steps)
    finally:
        torch.set_num_threads(threads)  # the caller's (a test session's)
    base = rows[DEIT]['ms']
    print(f'host time of a training step (forward, backward, zero_grad), CPU tensors, '
          f'width {OUTER_WIDTH}, {IMG_SIZE}x{IMG_SIZE}, batch 1, amp {args.amp}, '
          f'{args.rounds} rounds of {args.steps} steps\n')
    print('| model | ms per step (median [range]) | / DeiT-S | autograd nodes |')
    print('|---|---:|---:|---:|')
    for name, row in rows.items():
        row.update(ratio=row['ms'] / base, autograd_nodes=nodes[name])
        print(f"| {name} | {row['ms']:.2f} [{row['min_ms']:.2f}-{row['max_ms']:.2f}] | "
              f"{row['ratio']:.2f}x | {row['autograd_nodes']} |")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(amp=args.amp, rounds=args.rounds, steps=args.steps, rows=rows), f,
                      indent=1)
    return rows


if __name__ == '__main__':
    main()
