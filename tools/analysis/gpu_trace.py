#!/usr/bin/env python
"""Where a training step's time goes on a GPU: host against device, and the top kernels.

    python tools/analysis/gpu_trace.py [--amp bf16] [--top 15] [--trace-dir DIR]

For tnt_mm TNT-S (the ``auto`` backend: the Triton kernels on CUDA) and timm's DeiT-S, the
training step of tools/analysis/benchmark.py (224, batch 128, fused AdamW) and the detection
step (800x1344, batch 2, forward + backward with the pyramid) run once under
``torch.profiler`` after two warm-up steps. Per step it prints the wall time, the summed
device time of its kernels and their count, and the kernels that take most device time; a
wall time well above the device time is time the GPU waited for the host. Then the detection
step is captured in a CUDA graph and replayed (no host work per kernel): its time against the
eager step's bounds what a graph mode could gain. ``--trace-dir`` also writes Chrome traces.
The last line is all figures as JSON (tools/analysis/gpu_suite.py reads it). On the CPU it
runs at toy sizes as a check of the script (the device columns are then empty).
"""
import argparse
import json
import os.path as osp
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from benchmark import DET_BATCH, DET_SIZE, TRAIN_BATCH, build, loss_of  # noqa: E402

ROWS = ('tnt_mm TNT-S [auto]', 'timm DeiT-S')


def step_function(name: str, size, batch: int, device: str, dtype, optimize: bool):
    forward = build(name, size, device, 'cls' if tuple(size) == (224, 224) else 'pyramid')
    model = forward.module.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == 'cuda') \
        if optimize else None
    x = torch.randn(batch, 3, *size, device=device)

    def step():
        with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
            loss = loss_of(forward(x))
        loss.backward()
        if optimizer is not None:
            optimizer.step()
        model.zero_grad(set_to_none=False)  # graph capture needs the gradients to stay put
    return step


def sync(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def traced(step, device: str, top: int, trace_path=None) -> dict:
    for _ in range(2):
        step()
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == 'cuda' else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        step()
        sync(device)
        wall = time.perf_counter() - start
    if trace_path:
        prof.export_chrome_trace(trace_path)
    kernels = [e for e in prof.key_averages()
               if e.device_type == torch.autograd.DeviceType.CUDA]
    device_us = sum(e.self_device_time_total for e in kernels)
    kernels.sort(key=lambda e: e.self_device_time_total, reverse=True)
    return {'wall_ms': round(wall * 1e3, 2), 'device_ms': round(device_us / 1e3, 2),
            'kernel_launches': sum(e.count for e in kernels),
            'top_kernels': [[e.key[:90], round(e.self_device_time_total / 1e3, 3), e.count]
                            for e in kernels[:top]]}


def graph_replay(step, device: str, repeats: int = 10) -> dict:
    """The step captured in a CUDA graph, replayed: ms per step against eager."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    times = {}
    for label, run in (('eager', step), ('graph', graph.replay)):
        run()
        sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            run()
        sync(device)
        times[f'{label}_ms'] = round((time.perf_counter() - start) / repeats * 1e3, 2)
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--amp', choices=('bf16', 'none'), default='bf16')
    parser.add_argument('--top', type=int, default=15)
    parser.add_argument('--trace-dir', help='write a Chrome trace per step here')
    parser.add_argument('--train-size', type=int, default=224)
    parser.add_argument('--train-batch', type=int, default=TRAIN_BATCH)
    parser.add_argument('--det-size', type=int, nargs=2, default=DET_SIZE)
    parser.add_argument('--det-batch', type=int, default=DET_BATCH)
    args = parser.parse_args(argv)
    device = args.device
    dtype = torch.bfloat16 if args.amp == 'bf16' else None
    phases = {'train': ((args.train_size,) * 2, args.train_batch, True),
              'det': (tuple(args.det_size), args.det_batch, False)}
    results = {}
    for phase, (size, batch, optimize) in phases.items():
        for name in ROWS:
            step = step_function(name, size, batch, device, dtype, optimize)
            path = (osp.join(args.trace_dir, f'{phase}_{name.split()[1]}.json')
                    if args.trace_dir else None)
            row = traced(step, device, args.top, path)
            if phase == 'det' and device == 'cuda':
                try:
                    row['replay'] = graph_replay(step, device)
                except Exception as exc:  # a capture that fails is a finding, not a crash
                    row['replay'] = {'error': f'{type(exc).__name__}: {str(exc)[:300]}'}
            results[f'{phase} {name}'] = row
            print(f'\n{phase} {size[0]}x{size[1]} b{batch}, {name}: wall {row["wall_ms"]} ms, '
                  f'device {row["device_ms"]} ms in {row["kernel_launches"]} kernels'
                  + (f', replay {row["replay"]}' if 'replay' in row else ''))
            for kernel, ms, count in row['top_kernels']:
                print(f'  {ms:9.3f} ms  {count:5d}x  {kernel}')
            del step
            if device == 'cuda':
                torch.cuda.empty_cache()
    print(json.dumps({'device': torch.cuda.get_device_name() if device == 'cuda' else 'cpu',
                      'amp': args.amp, 'results': results}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
