"""Time the Triton inner-transformer kernels over their launch settings on a CUDA GPU.

The settings in ``tnt_mm.ops.triton_kernels`` (patches per program, warps) were first chosen
from ptxas's register and shared-memory report; this measures them. For each model width and
dtype it times the forward kernel over patches x warps and the backward kernel likewise, on the
same words (67,200 patches: batch 16 at 800x1333), and prints the times next to the current
setting's (``TNT_MM_TRITON_LAUNCH``'s, the default unless set). A setting that does not compile
or does not fit is reported and skipped; one that faults on the GPU leaves the CUDA context
unusable, so the current settings run first.

    python tools/analysis/tune_triton_kernels.py
    python tools/analysis/tune_triton_kernels.py --arch s --dtype bf16 --json tune.json
"""
import argparse
import itertools
import json
import statistics
import sys
import timeit

from tnt_mm.utils.cli import UsageError, add_debug_arg, run_cli

ARCHS = {'ti': (12, 2), 's': (24, 4), 'b': (40, 4)}  # word width, inner heads


def device_name(device: str) -> str:
    import torch
    return torch.cuda.get_device_name() if device == 'cuda' else 'CPU (Triton interpreter)'


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--arch', nargs='+', choices=sorted(ARCHS), default=['s', 'b'])
    parser.add_argument('--dtype', nargs='+', choices=('fp32', 'fp16', 'bf16'),
                        default=['bf16', 'fp32'])
    parser.add_argument('--patches', type=int, default=67200,
                        help='patches of the timed input. Defaults to 67200')
    parser.add_argument('--forward-patches', type=int, nargs='+', default=[4, 8, 16])
    parser.add_argument('--forward-warps', type=int, nargs='+', default=[2, 4, 8])
    parser.add_argument('--backward-patches', type=int, nargs='+', default=[2, 4, 8])
    parser.add_argument('--backward-warps', type=int, nargs='+', default=[4, 8])
    parser.add_argument('--kernel', nargs='+', choices=('forward', 'backward'),
                        default=['forward', 'backward'])
    parser.add_argument('--json', help='also write every time here')
    add_debug_arg(parser)
    args = parser.parse_args(argv)

    import torch

    from tnt_mm.models.backbones.tnt import TNTBlock
    from tnt_mm.ops import triton_kernels as tk
    # In Triton's interpreter (CPU tensors) the times mean nothing; it runs as a test of this
    # tool only.
    device = 'cpu' if tk.interpreting() else 'cuda'
    if device == 'cuda' and not torch.cuda.is_available():
        raise UsageError('no CUDA GPU: the kernels are timed on one')

    def median_ms(run) -> float:
        if device == 'cpu':
            return 1e3 * statistics.median(timeit.repeat(run, number=1, repeat=3))
        from triton.testing import do_bench
        return do_bench(run, warmup=10, rep=50, return_mode='median')
    dtypes = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}
    records = []
    print(f'{device_name(device)}, {args.patches} patches, times in ms (median)')
    for arch, dtype_name in itertools.product(args.arch, args.dtype):
        width, heads = ARCHS[arch]
        torch.manual_seed(0)
        block = TNTBlock(width, 16 * width, 16, heads, 4).to(device)
        dtype = dtypes[dtype_name]
        params = block.inner_params()
        weights = [w.detach() for w in tk._weights(params)]  # float32, as the model holds them
        words = torch.randn(args.patches, 16, width, device=device, dtype=dtype)
        grad_out = torch.randn_like(words)
        config = tk.launch_config(width, params, dtype)
        current = tk.settings_for(config)  # TNT_MM_TRITON_LAUNCH's (default unless set)
        rows = []
        forward_settings = itertools.product(args.forward_patches, args.forward_warps)
        for patches, warps in (forward_settings if 'forward' in args.kernel else ()):
            if warps > patches:
                # fewer than 16 rows per warp: at 4 patches x 8 warps it faulted on an H200
                # (Triton 3.6; an out-of-range shared-memory address in the fc2 product)
                print(f'{arch:<3} {dtype_name:<5} forward  patches {patches:>2} warps {warps} '
                      f'skipped: more warps than patches faulted on sm_90')
                continue
            with tk.launch_settings(current._replace(forward_patches=patches,
                                                     forward_warps=warps)):
                launch = tk.forward_launch(words, weights, None, 1e-5, config)[0]
            is_default = (patches, warps) == (current.forward_patches, current.forward_warps)
            rows.append(('forward', patches, warps, is_default, lambda l=launch: tk._launch(l)))
        backward_settings = itertools.product(args.backward_patches, args.backward_warps)
        for patches, warps in (backward_settings if 'backward' in args.kernel else ()):
            with tk.launch_settings(current._replace(backward_patches=patches,
                                                     backward_warps=warps)):
                launch = tk.backward_launch(words, grad_out, weights, None, 1e-5, config)[0]
            is_default = (patches, warps) == (current.backward_patches, current.backward_warps)
            rows.append(('backward', patches, warps, is_default, lambda l=launch: tk._launch(l)))
        # the current setting first: a setting that faults leaves the CUDA context unusable
        for kernel, patches, warps, is_default, run in sorted(rows, key=lambda r: not r[3]):
            try:
                ms = median_ms(run)
                detail = f'{ms:8.3f}'
            except Exception as error:  # reported; the other settings still run
                ms, detail = None, f'failed: {type(error).__name__}: {str(error).splitlines()[0]}'
            print(f'{arch:<3} {dtype_name:<5} {kernel:<8} patches {patches:>2} warps {warps} '
                  f'{detail}{"  (current)" if is_default else ""}', flush=True)
            records.append(dict(arch=arch, dtype=dtype_name, kernel=kernel, patches=patches,
                                warps=warps, current=is_default, ms=ms))
        for kernel in ('forward', 'backward'):
            timed = [r for r in records if r['arch'] == arch and r['dtype'] == dtype_name
                     and r['kernel'] == kernel and r['ms'] is not None]
            if timed:
                best = min(timed, key=lambda r: r['ms'])
                now = next((r for r in timed if r['current']), None)
                gain = f', {now["ms"] / best["ms"]:.2f}x the current' if now else ''
                print(f'  best {kernel}: patches {best["patches"]} warps {best["warps"]} '
                      f'{best["ms"]:.3f} ms{gain}', flush=True)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(device=device_name(device), patches=args.patches,
                           records=records), f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
