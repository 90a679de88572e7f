#!/usr/bin/env python
"""The optimizer step of a config's model, timed with the config's optimizer constructor and
with mmengine's ``DefaultOptimWrapperConstructor`` (one parameter group per parameter).

    python tools/analysis/optimizer_step.py [CONFIG ...] [--device cuda] [--steps 20]

Each model is built from its config with random weights and random gradients. Both optimizer
wrappers are built over the same parameters, each with its own state, and their
``optim_wrapper.step()`` runs alternate: ``--warmup`` rounds, then ``--steps`` timed ones
(synchronised on CUDA). The table gives the median ms per step; the last line is the same as
JSON (tools/analysis/gpu_suite.py reads it). ``step_profile.py --optimizers`` counts the
kernels of the same steps on the CPU.
"""
import argparse
import json
import statistics
import time
from typing import Dict, List, Optional, Sequence

import torch

DEFAULT_CONFIGS = ('configs/faster_rcnn_tnt_s_fpn.py',)
MMENGINE = 'DefaultOptimWrapperConstructor'


def build(config: str, device: str):
    """The config's model on ``device`` with random gradients, and its two optimizer wrappers:
    ``{constructor name: wrapper}``, mmengine's first."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import MODELS, DefaultScope

    from tnt_mm.utils.config import load_config
    cfg = load_config(config)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model).to(device)
        wrappers = {}
        for constructor in (MMENGINE, cfg.optim_wrapper.get('constructor', MMENGINE)):
            wrappers[constructor] = build_optim_wrapper(
                model, dict(cfg.optim_wrapper, constructor=constructor))
    generator = torch.Generator().manual_seed(0)
    for param in model.parameters():
        if param.requires_grad:
            param.grad = (torch.randn(param.shape, generator=generator) * 1e-3).to(device)
    return model, wrappers


def time_steps(wrappers: Dict[str, object], device: str, warmup: int,
               steps: int) -> Dict[str, float]:
    """Median ms of ``wrapper.step()`` per wrapper, the wrappers alternating."""
    times: Dict[str, List[float]] = {name: [] for name in wrappers}
    for round_ in range(warmup + steps):
        for name, wrapper in wrappers.items():
            if device.startswith('cuda'):
                torch.cuda.synchronize()
            start = time.perf_counter()
            wrapper.step()
            if device.startswith('cuda'):
                torch.cuda.synchronize()
            if round_ >= warmup:
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: Optional[Sequence[str]] = None) -> List[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('configs', nargs='*', default=list(DEFAULT_CONFIGS))
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--steps', type=int, default=20)
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f'--steps {args.steps}: at least one timed step is needed')
    import tnt_mm  # noqa: F401  (registers the constructors and the backbone)
    rows = []
    for config in args.configs:
        model, wrappers = build(config, args.device)
        medians = time_steps(wrappers, args.device, args.warmup, args.steps)
        for name, wrapper in wrappers.items():
            rows.append(dict(config=config, constructor=name, device=args.device,
                             groups=len(wrapper.optimizer.param_groups),
                             tensors=sum(p.requires_grad for p in model.parameters()),
                             step_ms=round(medians[name], 3)))
        del model, wrappers
    print('| config | constructor | tensors | groups | ms per step |')
    print('|---|---|---:|---:|---:|')
    for r in rows:
        print(f"| {r['config']} | {r['constructor']} | {r['tensors']} | {r['groups']} | "
              f"{r['step_ms']:.2f} |")
    print(json.dumps(dict(optimizer_step=rows)))
    return rows


if __name__ == '__main__':
    main()
