"""Check the Triton inner-transformer backend against the reference on a CUDA GPU.

The interpreter tests (tests/test_ops/test_triton_backend.py) check the kernels' arithmetic on
the CPU; this runs them where they are meant to run:

1. outputs and the gradients of the words and every weight, for TNT-Ti/S/B widths, in float32
   (to 1e-4), float16 and bfloat16 (autocast; at most twice the reference's own error in that
   precision, plus 1e-3), at 13 patches and at 67,200 (batch 16 at 800x1333);
2. training with stochastic depth: the same draws and gradients; the same with the opt-in
   fused words -> sentence norm (``TNT_MM_TRITON_FUSED_NORM``), float32 and bf16 autocast,
   and its sentence update against PyTorch's;
3. a few AdamW steps of TNT-S with each backend, from the same weights: the losses agree
   (also with the fused norm and ``low_precision_words``);
4. the inner transformer's time, forward+backward, at 67,200 patches;

and that ``auto`` picks the Triton kernels for CUDA tensors (``--checks kernels``; at each of
the ``--launch`` settings: ``tuned``, ``TNT_MM_TRITON_LAUNCH``'s opt-in, waits on it). Then the
kernels in graphs (``--checks graphs``), what ``auto`` waits on before it takes them there:

5. TNT-S inference under torch.compile with the kernels forced (custom ops in the graph)
   against eager;
6. AdamW training steps of TNT-S (224, bf16 autocast) with the kernels, run four ways from the
   same weights: eager, compiled (``torch.compile``: the kernels as custom ops, the backward
   compiled too), compiled with ``mode='reduce-overhead'`` (Inductor replays CUDA graphs) and
   the whole eager step (forward, backward, a capturable AdamW) captured in one CUDA graph and
   replayed; the fused words -> sentence path eager and captured. The losses must agree with
   eager's; the time per step of each is printed, and the figures as a JSON line at the end.

Prints one line per check and exits 1 if any fails. Run it without TRITON_INTERPRET.

    python tools/analysis/check_triton_gpu.py [--checks kernels graphs] [--launch default tuned]
"""
import argparse
import itertools
import json
import sys
import time
from typing import Callable, Dict, List, Optional

import torch

from tnt_mm.utils.cli import UsageError, add_debug_arg, run_cli

WIDTHS = {'ti': (12, 2), 's': (24, 4), 'b': (40, 4)}
DTYPES = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}
CHECKS = ('kernels', 'graphs')
# how a training step runs: eager, torch.compile (default and CUDA-graph mode), one CUDA graph
STEP_MODES = ('eager', 'compiled', 'reduce-overhead', 'cuda-graph')


def relative_error(a, b) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def check_kernels(args, report: Callable[[str, bool, str], None],
                  launch: str = 'default') -> None:
    """Checks 1-4: the kernels against the reference, eager, at the ``launch`` settings
    (``TNT_MM_TRITON_LAUNCH``); the checks' names then start with ``[launch]``."""
    from tnt_mm.ops import launch_settings
    with launch_settings(launch):
        _check_kernels(args, lambda name, ok, detail: report(
            name if launch == 'default' else f'[{launch}] {name}', ok, detail), launch)


def _check_kernels(args, report: Callable[[str, bool, str], None], launch: str) -> None:
    from tnt_mm.models import TNT
    from tnt_mm.models.backbones.tnt import TNTBlock
    from tnt_mm.ops import fused_norm, inner_backend, inner_transformer, patch_update, select

    def run(params, words, grad_out, training=False):
        inputs = [words] + [t for t in params if isinstance(t, torch.Tensor)]
        out = inner_transformer(words, params, training)
        return [out.detach(), *torch.autograd.grad(out, inputs, grad_out)]

    block = TNTBlock(24, 384, 16, 4, 6).cuda()
    chosen = select(torch.randn(4, 16, 24, device='cuda'), block.inner_params(), False)
    report('auto picks the Triton kernels for CUDA tensors', chosen == 'triton',
           f'auto chose {chosen!r}')
    # 1. outputs and gradients
    for arch, (width, heads) in WIDTHS.items():
        for patches in (13, args.large):
            torch.manual_seed(patches)
            block = TNTBlock(width, 16 * width, 16, heads, 4).cuda()
            for p in block.parameters():
                p.data.normal_(0, 0.3)
            params = block.inner_params()
            words = torch.randn(patches, 16, width, device='cuda', requires_grad=True)
            grad_out = torch.randn(patches, 16, width, device='cuda')
            with inner_backend('reference'):
                exact = run(params, words, grad_out)
            for dtype_name, dtype in DTYPES.items():
                amp = dict(device_type='cuda', dtype=dtype, enabled=dtype != torch.float32)
                with torch.autocast(**amp):
                    with inner_backend('triton'):
                        got = run(params, words, grad_out)
                    with inner_backend('reference'):
                        ref = run(params, words, grad_out)
                errors = [relative_error(g, e) for g, e in zip(got, exact)]
                if dtype == torch.float32:
                    ok, bound = max(errors) < 1e-4, '1e-4'
                else:
                    ref_errors = [relative_error(r, e) for r, e in zip(ref, exact)]
                    ok = all(e <= 2 * r + 1e-3 for e, r in zip(errors, ref_errors))
                    bound = f'2 x reference {max(ref_errors):.1e} + 1e-3'
                report(f'{arch} {dtype_name} {patches} patches', ok,
                       f'largest relative error {max(errors):.1e} (output {errors[0]:.1e}); '
                       f'bound {bound}')

    # 2. stochastic depth
    block = TNTBlock(24, 384, 16, 4, 6, drop_path=0.4).cuda()
    params = block.inner_params()
    words = torch.randn(999, 16, 24, device='cuda', requires_grad=True)
    grad_out = torch.randn_like(words)
    results = {}
    for backend in ('triton', 'reference'):
        torch.manual_seed(3)
        with inner_backend(backend):
            results[backend] = run(params, words, grad_out, training=True)
    errors = [relative_error(a, b) for a, b in zip(results['triton'], results['reference'])]
    report('stochastic depth (the same draws)', max(errors) < 1e-4,
           f'largest relative error {max(errors):.1e}')

    # 2b. the fused words -> sentence norm (opt-in until this passes)
    def run_normed(normed_dtype):
        inputs = [words] + [t for t in params if isinstance(t, torch.Tensor)] + list(
            block.norm1_proj.parameters())
        outs = inner_transformer(words, params, True, patch_norm=block.norm1_proj)
        outs = outs[0], outs[1].to(normed_dtype)  # as the projection after it casts it
        return [o.detach() for o in outs] + list(torch.autograd.grad(
            outs, inputs, (grad_out, grad_normed)))

    for patches in (999, args.large):
        for dtype_name in ('fp32', 'bf16'):
            words = torch.randn(patches, 16, 24, device='cuda', requires_grad=True)
            grad_out = torch.randn_like(words)
            grad_normed = torch.randn(patches, 16 * 24, device='cuda')
            results = {}
            for backend in ('exact', 'triton', 'reference'):
                torch.manual_seed(3)  # the same stochastic depth draws
                low = dtype_name == 'bf16' and backend != 'exact'
                with inner_backend('reference' if backend == 'exact' else backend), \
                        fused_norm(backend == 'triton'), \
                        torch.autocast('cuda', dtype=torch.bfloat16, enabled=low):
                    results[backend] = run_normed(torch.bfloat16 if low else torch.float32)
            errors = [relative_error(a, b) for a, b in zip(results['triton'], results['exact'])]
            if dtype_name == 'fp32':
                ok, bound = max(errors) < 1e-4, '1e-4'
            else:
                ref_errors = [relative_error(a, b)
                              for a, b in zip(results['reference'], results['exact'])]
                ok = all(e <= 2 * r + 1e-3 for e, r in zip(errors, ref_errors))
                bound = f'2 x reference {max(ref_errors):.1e} + 1e-3'
            report(f'fused words -> sentence norm, {dtype_name}, {patches} patches', ok,
                   f'largest relative error {max(errors):.1e}; bound {bound}')

    # 2c. the fused path's sentence update (opt-in with the norm)
    norm = block.norm2_proj
    with torch.no_grad():  # away from the init's ones and zeros: every term counts
        norm.weight.normal_(1, 0.3)
        norm.bias.normal_(0, 0.3)
    for images, dtype_name in itertools.product((2, 342), ('fp32', 'bf16')):  # 342: 67,032
        sentences = torch.randn(images, 197, 384, device='cuda', requires_grad=True)
        projected = torch.randn(images, 196, 384, device='cuda').to(
            torch.bfloat16 if dtype_name == 'bf16' else torch.float32).requires_grad_()
        grad = torch.randn_like(sentences)
        inputs = [sentences, projected, norm.weight, norm.bias]
        results = {}
        for backend in ('triton', 'reference'):
            with inner_backend(backend), fused_norm(backend == 'triton'), torch.autocast(
                    'cuda', dtype=torch.bfloat16, enabled=dtype_name == 'bf16'):
                out = patch_update(sentences, projected, norm)
            results[backend] = [out] + list(torch.autograd.grad(out, inputs, grad))
        errors = [relative_error(a, b) for a, b in zip(results['triton'], results['reference'])]
        bound = 1e-5 if dtype_name == 'fp32' else 1e-2  # bf16: one rounding of the gradient
        report(f'fused sentence update, {dtype_name}, {images * 196} patches',
               max(errors) < bound, f'largest relative error {max(errors):.1e}; bound {bound}')

    # 3. training steps
    losses = {}
    for backend in ('triton', 'triton-fused', 'reference'):
        torch.manual_seed(0)
        model = TNT('small', out_type='cls_token', drop_path_rate=0.1,
                    low_precision_words=backend == 'triton-fused').cuda().train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x = torch.randn(8, 3, 224, 224, device='cuda')
        losses[backend] = []
        for _ in range(args.steps):
            with inner_backend(backend.split('-')[0]), fused_norm(backend == 'triton-fused'), \
                    torch.autocast('cuda', dtype=torch.bfloat16):
                loss = model(x)[-1].float().square().mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses[backend].append(loss.item())
    for backend in ('triton', 'triton-fused'):
        diff = max(abs(a - b) / abs(b) for a, b in zip(losses[backend], losses['reference']))
        report(f'{args.steps} AdamW steps of TNT-S, bf16 autocast, {backend}', diff < 2e-2,
               f'losses {[round(v, 4) for v in losses[backend]]} vs '
               f'{[round(v, 4) for v in losses["reference"]]}; largest relative difference '
               f'{diff:.1e}')

    # 4. time of the inner transformer alone
    block = TNTBlock(24, 384, 16, 4, 6).cuda()
    params = block.inner_params()
    for dtype_name in ('fp32', 'bf16'):
        amp = dict(device_type='cuda', dtype=torch.bfloat16, enabled=dtype_name == 'bf16')
        words = torch.randn(args.large, 16, 24, device='cuda', requires_grad=True)
        times = {}
        for backend in ('triton', 'reference'):
            def step():
                with inner_backend(backend), torch.autocast(**amp):
                    out = inner_transformer(words, params)
                out.float().sum().backward()
            for _ in range(3):
                step()
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(10):
                step()
            torch.cuda.synchronize()
            times[backend] = (time.perf_counter() - start) / 10 * 1e3
        print(f'time TNT-S inner transformer (launch {launch}), {args.large} patches, '
              f'{dtype_name}, fwd+bwd: triton {times["triton"]:.2f} ms, reference '
              f'{times["reference"]:.2f} ms ({times["reference"] / times["triton"]:.2f}x)')


def training_run(model: torch.nn.Module, x: torch.Tensor, mode: str, steps: int,
                 warmup: int = 3, amp: Optional[torch.dtype] = None) -> Dict:
    """``warmup + steps`` AdamW steps of ``model`` on ``x`` (the loss: the class token's mean
    square), each step run as ``mode`` says (:data:`STEP_MODES`): the loss of every step, and
    the milliseconds per step of the last ``steps``, after the warm-up that compiles or
    captures. 'cuda-graph' warms up on a side stream, captures the whole step (forward,
    backward and a capturable AdamW) in one CUDA graph and replays it."""
    if mode not in STEP_MODES:
        raise ValueError(f'mode={mode!r}: one of {STEP_MODES}')
    device = x.device.type
    if mode in ('reduce-overhead', 'cuda-graph') and device != 'cuda':
        raise ValueError(f'mode {mode!r} replays CUDA graphs; the input is on {x.device}')
    if mode == 'cuda-graph' and warmup < 1:
        raise ValueError('a captured step needs a warm-up step first (the gradients and the '
                         'optimizer state must exist before the capture)')
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, capturable=mode == 'cuda-graph')
    forward = model
    if mode in ('compiled', 'reduce-overhead'):
        forward = torch.compile(model, mode=None if mode == 'compiled' else mode)

    def step() -> torch.Tensor:
        if mode == 'reduce-overhead':  # a new iteration: the last replay's outputs are spent
            torch.compiler.cudagraph_mark_step_begin()
        # a captured step needs its gradients in place; elsewhere none are kept, which
        # Inductor's graph replays want (a kept gradient could live in their memory pool)
        optimizer.zero_grad(set_to_none=mode != 'cuda-graph')
        # a captured graph cannot keep autocast's cast weights between steps
        with torch.autocast(device, dtype=amp, enabled=amp is not None,
                            cache_enabled=mode != 'cuda-graph'):
            loss = forward(x)[-1].float().square().mean()
        loss.backward()
        optimizer.step()
        return loss.detach()

    from torch._dynamo.utils import counters
    skips = counters['inductor']['cudagraph_skips']  # graphs Inductor declined to replay
    losses: List[torch.Tensor] = []
    timed_step = step
    if mode == 'cuda-graph':
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            losses += [step() for _ in range(warmup)]
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = step()

        def replay() -> torch.Tensor:
            graph.replay()
            return captured.clone()
        timed_step = replay
    else:
        losses += [step() for _ in range(warmup)]
    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
    sync()
    start = time.perf_counter()
    losses += [timed_step() for _ in range(steps)]
    sync()
    return dict(losses=[loss.item() for loss in losses],
                ms=(time.perf_counter() - start) / steps * 1e3,
                cudagraph_skips=counters['inductor']['cudagraph_skips'] - skips)


def check_graphs(args, report: Callable[[str, bool, str], None]) -> None:
    """Checks 5 and 6: the kernels in compiled and captured graphs."""
    from tnt_mm.models import TNT
    from tnt_mm.ops import fused_norm, inner_backend

    # 5. torch.compile: the kernels as custom ops inside the graph
    torch.manual_seed(0)
    model = TNT('small', out_type='cls_token').cuda().eval()
    x = torch.randn(8, 3, 224, 224, device='cuda')
    with torch.no_grad(), inner_backend('triton'), torch.autocast('cuda', dtype=torch.bfloat16):
        eager = model(x)[-1].float()
        compiled = torch.compile(model)(x)[-1].float()
    error = relative_error(compiled, eager)
    report('TNT-S under torch.compile with the kernels as custom ops, bf16', error < 2e-2,
           f'relative difference to eager {error:.1e}')

    # 6. training steps with the kernels: eager, compiled, graph-replayed. Without stochastic
    # depth, whose draws come from other random streams in compiled graphs.
    x = torch.randn(args.graph_batch, 3, 224, 224, device='cuda')
    runs: Dict[str, Dict] = {}
    for mode, fused in [(mode, False) for mode in STEP_MODES] + [('eager', True),
                                                                 ('cuda-graph', True)]:
        name = f'{mode}, fused' if fused else mode
        torch.manual_seed(0)
        model = TNT('small', out_type='cls_token', low_precision_words=fused).cuda().train()
        try:
            with inner_backend('triton'), fused_norm(fused):
                runs[name] = training_run(model, x, mode, args.steps, amp=torch.bfloat16)
        except Exception as exc:  # a mode that cannot run is a finding: report it, go on
            report(f'TNT-S training steps, {name}', False,
                   f'{type(exc).__name__}: {str(exc)[:300]}')
        del model
        torch.cuda.empty_cache()
    eager = runs.get('eager')
    for name, run in runs.items():
        if name == 'eager' or eager is None:
            continue
        diff = max(abs(a - b) / abs(b) for a, b in zip(run['losses'], eager['losses']))
        report(f'TNT-S training steps with the kernels, {name}, against eager', diff < 2e-2,
               f'losses {[round(v, 4) for v in run["losses"]]}; largest relative difference '
               f'{diff:.1e}')
        if name == 'reduce-overhead':  # else it passes without a graph replayed
            report('Inductor replays the compiled steps as CUDA graphs',
                   not run['cudagraph_skips'], f'{run["cudagraph_skips"]} graph(s) not '
                   f'replayed (the reason: the warning above)')
    if runs:
        print(f'time TNT-S training step with the kernels, 224, batch {args.graph_batch}, '
              f'bf16: ' + ', '.join(f'{name} {run["ms"]:.2f} ms' for name, run in runs.items())
              + (f' (eager / graph-replayed: {eager["ms"] / runs["cuda-graph"]["ms"]:.2f}x)'
                 if eager and 'cuda-graph' in runs else ''))
    print(json.dumps({'training_steps': runs, 'batch': args.graph_batch}))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--checks', nargs='+', choices=CHECKS, default=list(CHECKS),
                        help='kernels: the kernels against the reference (1-4); graphs: the '
                        'kernels in compiled and captured graphs (5, 6). Defaults to both')
    parser.add_argument('--launch', nargs='+', choices=('default', 'tuned'),
                        default=['default'],
                        help='run the kernel checks at each of these launch settings '
                        '(TNT_MM_TRITON_LAUNCH; tuned: opt-in until it passes here). Defaults '
                        'to default')
    parser.add_argument('--large', type=int, default=67200,
                        help='patches of the large case and of the timing. Defaults to 67200')
    parser.add_argument('--steps', type=int, default=5, help='training steps. Defaults to 5')
    parser.add_argument('--graph-batch', type=int, default=128,
                        help='batch of the training steps of check 6 (the GPU benchmark\'s). '
                        'Defaults to 128')
    add_debug_arg(parser)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise UsageError('no CUDA GPU: this checks the Triton kernels on one (the interpreter '
                         'tests check them without)')
    from tnt_mm.ops import triton_kernels
    if triton_kernels.interpreting():
        raise UsageError('TRITON_INTERPRET=1 would run the kernels in the interpreter; unset it')

    failures = []

    def report(name: str, ok: bool, detail: str) -> None:
        print(f'{"ok  " if ok else "FAIL"} {name}: {detail}', flush=True)
        if not ok:
            failures.append(name)

    print(f'{torch.cuda.get_device_name()}, torch {torch.__version__}')
    if 'kernels' in args.checks:
        for launch in args.launch:
            check_kernels(args, report, launch)
    if 'graphs' in args.checks:
        check_graphs(args, report)
    if failures:
        print(f'{len(failures)} check(s) failed: {", ".join(failures)}', file=sys.stderr)
        return 1
    print('all checks passed')
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
