"""Compile the Triton inner-transformer kernels for GPU targets, ahead of time, without a GPU.

What the GPU compiler checks and Triton's interpreter does not (block shapes, dot sizes,
layouts, shared memory) is checked here: every kernel (forward, backward) of each model width
in each dtype is compiled for each compute capability, with and without stochastic depth,
and with the fused words -> sentence norm (with stochastic depth; then also the sentence
update's two kernels at the model's sentence width), and its shared memory is compared with
the target's limit; with ``--launch tuned`` also at the opt-in tuned launch settings where they
differ from the default. Prints one line per kernel and exits non-zero if any fails.

    python tools/analysis/compile_triton_kernels.py                     # Ti/S/B, 3 dtypes, sm_80 + sm_90
    python tools/analysis/compile_triton_kernels.py --arch s --dtype bf16 --capability 90
    python tools/analysis/compile_triton_kernels.py --fused-norm with   # the opt-in fused norm
    python tools/analysis/compile_triton_kernels.py --launch tuned      # TNT_MM_TRITON_LAUNCH
"""
import argparse
import itertools
import os
import sys
import time

from tnt_mm.models.backbones.tnt_arch import ARCH_ZOO
from tnt_mm.utils.cli import UsageError, add_debug_arg, run_cli

ARCHS = ('ti', 's', 'b')
DTYPES = ('fp32', 'fp16', 'bf16')
# shared memory one block may use (KB): A100 and later sm_8x, H100/H200
SHARED_MEMORY_KB = {80: 163, 86: 99, 89: 99, 90: 227}


def compile_one(triton_kernels, launch, capability: int, *columns: str) -> int:
    """Compile one launch for ``capability`` and print its row (the last column: patches or
    rows per program x warps); the number of failures."""
    start = time.perf_counter()
    row = f'{launch.kernel:<22} ' + ' '.join(
        f'{c:<{w}}' for c, w in zip(columns, (4, 5, 9, 5))) + f' sm_{capability:<3}'
    setting = f'{launch.meta.get("P", launch.meta.get("R"))}x{launch.num_warps}'
    try:
        compiled = triton_kernels.compile_for_gpu(launch, capability)
    except Exception as error:  # reported per kernel; the others still compile
        print(f'{row} FAILED ({setting}): {type(error).__name__}: '
              f'{str(error).splitlines()[0]}')
        return 1
    shared_kb = compiled.metadata.shared / 1024
    print(f'{row} {shared_kb:>9.1f} {len(compiled.asm["cubin"]) / 1024:>8.0f} '
          f'{time.perf_counter() - start:>7.1f} {setting:>6}', flush=True)
    if shared_kb > SHARED_MEMORY_KB[capability]:
        print(f'  FAILED: {shared_kb:.1f} KB of shared memory, sm_{capability} gives a block '
              f'{SHARED_MEMORY_KB[capability]} KB')
        return 1
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--arch', nargs='+', choices=ARCHS, default=list(ARCHS))
    parser.add_argument('--dtype', nargs='+', choices=DTYPES, default=list(DTYPES))
    parser.add_argument('--capability', nargs='+', type=int, default=[80, 90],
                        help=f'compute capabilities, of {sorted(SHARED_MEMORY_KB)} (default: '
                             f'80 90)')
    parser.add_argument('--drop-path', choices=('with', 'without', 'both'), default='both',
                        help='the stochastic-depth variant of the kernels (default: both)')
    parser.add_argument('--fused-norm', choices=('with', 'without', 'both'), default='both',
                        help='the kernels with the words -> sentence LayerNorm '
                             '(TNT_MM_TRITON_FUSED_NORM=1; default: both, the fused ones with '
                             'stochastic depth only, the variant with the most state)')
    parser.add_argument('--launch', nargs='+', choices=('default', 'tuned'),
                        default=['default'],
                        help='launch settings (TNT_MM_TRITON_LAUNCH); tuned: only the kernels '
                             'whose settings differ from the default (default: default)')
    add_debug_arg(parser)
    args = parser.parse_args(argv)
    unknown = sorted(set(args.capability) - set(SHARED_MEMORY_KB))
    if unknown:
        raise UsageError(f'--capability {unknown[0]} is not one of {sorted(SHARED_MEMORY_KB)}')
    if os.environ.get('TRITON_INTERPRET') == '1':
        raise UsageError('TRITON_INTERPRET=1 runs kernels in the interpreter, which compiles '
                         'nothing; unset it')

    import torch

    from tnt_mm.models.backbones.tnt import TNTBlock
    from tnt_mm.ops import triton_kernels

    dtypes = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}
    drop_paths = {'with': [True], 'without': [False], 'both': [False, True]}[args.drop_path]
    fused = {'with': [True], 'without': [False], 'both': [False, True]}[args.fused_norm]
    variants = [(d, f) for d, f in itertools.product(drop_paths, fused)
                if not (args.fused_norm == 'both' and args.drop_path == 'both' and f and not d)]
    print(f'{"kernel":<22} {"arch":<4} {"dtype":<5} {"drop path":<9} {"norm":<5} {"target":<6} '
          f'{"shared KB":>9} {"cubin KB":>8} {"seconds":>7} {"launch":>6}')
    failures = 0
    for choice, arch, dtype, (drop_path, fuse_norm), capability in itertools.product(
            args.launch, args.arch, args.dtype, variants, args.capability):
        width, heads = ARCH_ZOO[arch]['inner_dim'], ARCH_ZOO[arch]['inner_heads']
        params = TNTBlock(width, 16 * width, 16, heads, 4).inner_params()
        words = torch.empty(21, 16, width, dtype=dtypes[dtype])
        weights = triton_kernels._weights(params)
        config = triton_kernels.launch_config(width, params, dtypes[dtype])
        keep = (torch.ones(21), torch.ones(21)) if drop_path else None
        norm = (torch.ones(16 * width), torch.zeros(16 * width), 1e-5) if fuse_norm else None
        normed = torch.empty(21, 16 * width, dtype=dtypes[dtype])
        launches = {}
        for settings in {'default', choice}:
            with triton_kernels.launch_settings(settings):
                launches[settings] = [
                    triton_kernels.forward_launch(words, weights, keep, 1e-5, config, norm,
                                                  dtypes[dtype])[0],
                    triton_kernels.backward_launch(words, words, weights, keep, 1e-5, config,
                                                   norm, words, normed)[0]]
        for launch, default in zip(launches[choice], launches['default']):
            if choice != 'default' and (launch.meta['P'], launch.num_warps) == (
                    default.meta['P'], default.num_warps):
                continue  # the default's kernel, compiled with --launch default
            failures += compile_one(triton_kernels, launch, capability, arch, dtype,
                                    'yes' if drop_path else 'no', 'fused' if fuse_norm else '-')
    if True in fused and 'default' in args.launch:  # the fused path's sentence update
        for arch, dtype, capability in itertools.product(args.arch, args.dtype, args.capability):
            width = ARCH_ZOO[arch]['outer_dim']
            sentences = torch.empty(2, 197, width)
            projected = torch.empty(2, 196, width, dtype=dtypes[dtype])
            norm_weight, norm_bias = torch.ones(width), torch.zeros(width)
            launches = [
                triton_kernels.update_forward_launch(sentences, projected, norm_weight,
                                                     norm_bias, 1e-5)[0],
                triton_kernels.update_backward_launch(sentences, projected, norm_weight,
                                                      1e-5)[0]]
            for launch in launches:
                failures += compile_one(triton_kernels, launch, capability, arch, dtype, '-',
                                        'fused')
    if failures:
        print(f'{failures} kernel(s) failed', file=sys.stderr)
        return 1
    print('all kernels compiled')
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
