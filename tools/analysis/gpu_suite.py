#!/usr/bin/env python
"""Everything this project checks on a GPU, as one prepared run with its own time budgets.

    python3 tools/analysis/gpu_suite.py --out DIR [--budget 540] [--steps STEP ...]
    python3 tools/analysis/gpu_suite.py --out DIR --dry-run     # the plan; checks .whl/

Made for the GPU machines this project borrows at times (H100 or H200, Python 3.12, torch 2.11
cu130, no network): the wheelhouse travels with the checkout in an ignored ``.whl/`` folder
(``make wheelhouse WHEELHOUSE=.whl PYTHON_VERSION=3.12 TORCH=system
HAVE=tools/analysis/gpu_image_packages.txt``). Quick, sure steps come first and the long mmcv
CUDA build last, so a slow step still leaves the results before it. Each step runs as a child
process under the smaller of its own budget and what is left of ``--budget``; a step that would
start with less than its minimum left is skipped. After every step ``DIR/gpu_suite.json`` is
rewritten (status, seconds, parsed figures) and the children's output is appended to
``DIR/gpu_suite.log``, so a run cut short keeps what it measured. The budgets add up to more
than one call's 9 minutes: a second call on the warm machine goes on with ``--steps`` (the
environment in .venv/ is reused).
"""
import argparse
import json
import os
import os.path as osp
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
WHEELHOUSE = '.whl'
INSTALL = f'TORCH=system WHEELHOUSE={WHEELHOUSE} PYTHON=python3'
# the make targets install first: with the same settings they reuse the environment
INSTALL_CPU = f'{INSTALL} TNT_MM_MMCV_OPS=cpu'
VENV_PY = '.venv/bin/python'
TRAIN = f'OMP_NUM_THREADS=8 {VENV_PY} tools/train.py'
FAST_LOADERS = ('train_dataloader.num_workers=4 val_dataloader.num_workers=4')


@dataclass
class Step:
    name: str
    command: str
    budget: int                     # seconds it may take at most
    minimum: int                    # seconds it needs to be worth starting
    parse: Optional[Callable[[str], Dict]] = None
    env: Dict[str, str] = field(default_factory=dict)
    what: str = ''


def floats(patterns: Dict[str, str]) -> Callable[[str], Dict]:
    """A parser taking the last match of each regular expression as a number."""
    def parse(text: str) -> Dict:
        found = {}
        for key, pattern in patterns.items():
            matches = re.findall(pattern, text)
            if matches:
                found[key] = float(matches[-1])
        return found
    return parse


def json_lines(text: str) -> Dict:
    """The last line of the output that is a JSON object."""
    for line in reversed(text.strip().splitlines()):
        if line.startswith('{'):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return {}


COCO = floats({'bbox_mAP': r'coco/bbox_mAP: ([\d.]+)', 'bbox_mAP_50': r'coco/bbox_mAP_50: ([\d.]+)',
               'segm_mAP': r'coco/segm_mAP: ([\d.]+)'})
MIOU = floats({'mIoU': r'mIoU: ([\d.]+)'})

STEPS = [
    Step('gpu', 'nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; '
         'python3 -c "import torch, triton, sys; print(sys.version.split()[0], torch.__version__, '
         'triton.__version__, torch.cuda.get_device_name(0))"', 30, 5,
         what='the card, the driver, Python, torch and Triton'),
    # tools/install.sh itself (what `make install` runs): the image may lack make
    Step('install_cpu', f'{INSTALL_CPU} bash tools/install.sh', 300, 120,
         parse=floats({'mmcv_build_s': r'mmcv build took (\d+) s'}),
         what='the environment over the machine\'s torch, mmcv with CPU ops, from .whl alone'),
    Step('detection_ops', f'{VENV_PY} tools/analysis/gpu_suite.py --child detection_ops cuda',
         60, 20, parse=json_lines, env={'TNT_MM_DETECTION_OPS': 'auto'},
         what='nms and RoIAlign on cuda:0 through tnt_mm.detection_ops against mmcv on the CPU'),
    # the kernels' check first among the measurements: what `auto` may use by default (the
    # fused words -> sentence norm and update, the tuned launch settings) waits on it
    Step('triton_check', f'{VENV_PY} tools/analysis/check_triton_gpu.py --checks kernels '
         f'--launch default tuned', 200, 60, parse=floats({
             f'inner_fwd_bwd_ms_{dtype}_{launch}':
             rf'\(launch {launch}\), \d+ patches, {dtype}, fwd\+bwd: triton ([\d.]+) ms'
             for dtype in ('fp32', 'bf16') for launch in ('default', 'tuned')}),
         what='the Triton kernels against the reference, eager: every width and dtype, the '
              'opt-in fused words -> sentence norm and update, AdamW steps; at the default and '
              'the opt-in tuned launch settings'),
    Step('demo_det', f'{INSTALL_CPU} make demo THREADS=8 TRAIN_ARGS=--amp', 240, 90, parse=COCO,
         env={'TNT_MM_DETECTION_OPS': 'auto'},
         what='the main job: make demo on the GPU with AMP, on torchvision\'s kernels'),
    Step('trace', f'{VENV_PY} tools/analysis/gpu_trace.py --amp bf16', 150, 60,
         parse=json_lines,
         what='torch.profiler of one TNT-S and DeiT-S step at 224 b128 and 800x1344 b2: host '
              'against device time, top kernels; the 800x1344 step replayed as a CUDA graph'),
    Step('benchmark', f'{VENV_PY} tools/analysis/benchmark.py gpu --device cuda --amp bf16 '
         f'--backends reference triton triton-fused --rounds 3', 180, 90,
         what='TNT-S against timm TNT-S and DeiT-S: training, inference, 800x1344'),
    # what `auto` waits on before it takes the kernels into compiled and captured graphs
    Step('graphs', f'{VENV_PY} tools/analysis/check_triton_gpu.py --checks graphs', 240, 120,
         parse=json_lines,
         what='TNT-S with the kernels under torch.compile (default and reduce-overhead) and '
              'captured in one CUDA graph: losses against eager, time per training step'),
    Step('benchmark_compiled', f'{VENV_PY} tools/analysis/benchmark.py gpu --device cuda '
         f'--amp bf16 --phases train det --backends triton --compile tnt_mm deit --rounds 3',
         240, 150, what='the same against compiled DeiT-S, with TNT-S compiled (the kernels '
                        'as custom ops)'),
    Step('detector_step', f'{VENV_PY} tools/analysis/detector_step.py --amp bf16', 150, 60,
         parse=json_lines,
         what='Faster R-CNN + FPN, 800x1333 batch 2, bf16: TNT-S, ResNet-50, DeiT-S'),
    Step('optimizer_step', f'{VENV_PY} tools/analysis/optimizer_step.py '
         f'configs/faster_rcnn_tnt_s_fpn.py configs/detr_tnt_s.py', 60, 30, parse=json_lines,
         what='AdamW step of the detectors, groups merged per setting against one per parameter'),
    Step('demo_mask', f'make det-data && {TRAIN} configs/demo/mask_shapes.py --amp --work-dir '
         f'work_dirs/gpu_mask --cfg-options train_cfg.max_epochs=1 train_cfg.val_interval=1 '
         f'{FAST_LOADERS}', 120, 60, parse=COCO, env={'TNT_MM_DETECTION_OPS': 'auto'},
         what='Mask R-CNN demo, one epoch (200 iterations)'),
    Step('demo_seg', f'make seg-data && {TRAIN} '
         f'configs/demo/seg_shapes_upernet.py --amp --work-dir work_dirs/gpu_seg --cfg-options '
         f'train_cfg.max_iters=300 train_cfg.val_interval=300 {FAST_LOADERS}', 120, 60,
         parse=MIOU, what='UperNet demo, 300 iterations'),
    Step('install_cuda', f'{INSTALL} TNT_MM_MMCV_OPS=cuda TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 '
         f'bash tools/install.sh', 420, 240,
         parse=floats({'mmcv_build_s': r'mmcv build took (\d+) s'}),
         what='mmcv with CUDA ops for sm_90 (timed), then nms/RoIAlign on cuda:0 against the CPU'),
    Step('demo_det_mmcv_cuda', f'make det-data && {TRAIN} configs/demo/det_shapes.py --amp '
         f'--work-dir work_dirs/gpu_det_mmcv --cfg-options train_cfg.max_epochs=1 '
         f'train_cfg.val_interval=1 '
         f'{FAST_LOADERS}', 120, 60, parse=COCO, env={'TNT_MM_DETECTION_OPS': 'mmcv'},
         what='the detection demo for one epoch on mmcv\'s own CUDA kernels'),
]


def detection_ops_child(device: str) -> None:
    """nms, batched_nms and RoIAlign forward/backward on ``device`` with the kernels that
    ``TNT_MM_DETECTION_OPS`` chooses, against mmcv's own on the CPU; one JSON line."""
    import torch
    from mmcv.ops import RoIAlign, batched_nms, nms

    import tnt_mm  # noqa: F401  (installs the fallback)
    from tnt_mm import detection_ops
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(2000, 2, generator=gen) * 600
    boxes = torch.cat([xy, xy + 10 + torch.rand(2000, 2, generator=gen) * 150], 1)
    scores = torch.rand(2000, generator=gen)
    labels = torch.randint(0, 80, (2000,), generator=gen)
    feats = torch.randn(2, 64, 100, 152, generator=gen)
    rois = torch.cat([torch.randint(0, 2, (256, 1), generator=gen).float(), boxes[:256]], 1)
    roi_align = RoIAlign((7, 7), 1 / 8, sampling_ratio=0, aligned=True)

    def run(on: str):
        keep = nms(boxes.to(on), scores.to(on), 0.5)[1].cpu()
        kept = batched_nms(boxes.to(on), scores.to(on), labels.to(on),
                           dict(iou_threshold=0.6))[1].cpu()
        x = feats.to(on).requires_grad_()
        out = roi_align(x, rois.to(on))
        out.square().sum().backward()
        return keep, kept, out.detach().cpu(), x.grad.cpu()

    chosen = os.environ.get(detection_ops.ENV_VAR, 'auto')
    os.environ[detection_ops.ENV_VAR] = 'mmcv'
    reference = run('cpu')
    os.environ[detection_ops.ENV_VAR] = chosen
    detection_ops._chosen.clear()
    result_tensors = run(device)
    result = {'device': device, 'nms_equal': torch.equal(reference[0], result_tensors[0]),
              'batched_nms_equal': torch.equal(reference[1], result_tensors[1]),
              'roi_align_forward_max_diff': (reference[2] - result_tensors[2]).abs().max().item(),
              'roi_align_backward_max_diff': (reference[3] - result_tensors[3]).abs().max().item(),
              'kernels': {f'{op} on {on}': kernel
                          for (op, on), kernel in detection_ops.chosen_kernels().items()}}
    # mmengine's randomness=dict(deterministic=True) switches this on for the whole process;
    # torchvision's alert for its roi_align backward sits in the Python layer the proxy skips
    torch.use_deterministic_algorithms(True)
    try:
        x = feats.to(device).requires_grad_()
        roi_align(x, rois.to(device)).sum().backward()
        result['roi_align_backward_deterministic_mode'] = 'ran'
    except RuntimeError as exc:
        result['roi_align_backward_deterministic_mode'] = f'raised: {str(exc)[:200]}'
    finally:
        torch.use_deterministic_algorithms(False)
    print(json.dumps(result))


def run_step(step: Step, seconds: float, log) -> Dict:
    started = time.monotonic()
    log.write(f'\n===== {step.name}: {step.command}\n')
    log.flush()
    # a session of its own: at the budget the whole tree goes (make, its python, the compilers)
    proc = subprocess.Popen(step.command, shell=True, cwd=ROOT, env={**os.environ, **step.env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=seconds)
        status = 'ok' if proc.returncode == 0 else f'failed ({proc.returncode})'
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        status = f'timed out after {seconds:.0f} s'
    log.write(output)
    log.flush()
    result = {'status': status, 'seconds': round(time.monotonic() - started, 1)}
    if step.parse:
        result.update(step.parse(output))
    if status != 'ok':
        result['tail'] = output.strip().splitlines()[-15:]
    return result


def check_wheelhouse(path: str) -> List[str]:
    """Problems with the wheelhouse: absent, no record, files its record lists but lacks, made
    for another target, or too large to travel."""
    if not osp.isfile(osp.join(path, 'wheelhouse.json')):
        return [f'{path}/wheelhouse.json is missing. Fix: make wheelhouse WHEELHOUSE={WHEELHOUSE} '
                f'PYTHON_VERSION=3.12 TORCH=system HAVE=tools/analysis/gpu_image_packages.txt']
    problems = []
    check = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'wheelhouse.py'), path,
                            '--check'], capture_output=True, text=True)
    if check.returncode:
        problems.append(check.stderr.strip())
    with open(osp.join(path, 'wheelhouse.json')) as f:
        record = json.load(f)
    if record.get('torch') != 'system' or record.get('python_version') != '3.12':
        problems.append(f'{path} was made for Python {record.get("python_version")} with '
                        f'torch {record.get("torch")}; the GPU machines need 3.12 and system')
    size = sum(osp.getsize(osp.join(path, f)) for f in os.listdir(path))
    if size > 48 * 2**20:
        problems.append(f'{path} holds {size / 2**20:.0f} MiB; the device carries 64 MiB '
                        f'with the checkout')
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', help='folder for gpu_suite.json and gpu_suite.log')
    parser.add_argument('--budget', type=float, default=540, help='seconds for the whole run')
    parser.add_argument('--steps', nargs='+', choices=[s.name for s in STEPS],
                        help='run only these (in the suite\'s order)')
    parser.add_argument('--dry-run', action='store_true',
                        help='print the plan and check the wheelhouse; run nothing')
    parser.add_argument('--wheelhouse', default=osp.join(ROOT, WHEELHOUSE),
                        help='the wheelhouse --dry-run checks (default: .whl/)')
    parser.add_argument('--child', nargs=2, metavar=('NAME', 'DEVICE'), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        detection_ops_child(args.child[1])
        return 0
    steps = [s for s in STEPS if not args.steps or s.name in args.steps]
    if args.dry_run:
        total = 0
        for step in steps:
            total += step.budget
            env = ' '.join(f'{k}={shlex.quote(v)}' for k, v in step.env.items())
            print(f'{step.name:20s} {step.budget:4d} s (at least {step.minimum:3d}): {step.what}\n'
                  f'{"":20s} $ {env + " " if env else ""}{step.command}')
        print(f'{len(steps)} steps, {total} s of budgets within --budget {args.budget:.0f} s')
        problems = check_wheelhouse(args.wheelhouse)
        for problem in problems:
            print(f'ERROR: {problem}', file=sys.stderr)
        return 2 if problems else 0
    if not args.out:
        parser.error('--out DIR is required (unless --dry-run)')
    os.makedirs(args.out, exist_ok=True)
    report = {'started': time.strftime('%Y-%m-%d %H:%M:%S'), 'budget_s': args.budget, 'steps': {}}
    deadline = time.monotonic() + args.budget
    with open(osp.join(args.out, 'gpu_suite.log'), 'a') as log:
        for step in steps:
            left = deadline - time.monotonic()
            if left < step.minimum:
                report['steps'][step.name] = {'status': f'skipped: {left:.0f} s left, needs '
                                                        f'{step.minimum}'}
            else:
                report['steps'][step.name] = run_step(step, min(step.budget, left), log)
            print(f'[gpu_suite] {step.name}: {json.dumps(report["steps"][step.name])[:400]}',
                  flush=True)
            with open(osp.join(args.out, 'gpu_suite.json'), 'w') as f:
                json.dump(report, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
