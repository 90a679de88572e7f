"""How tools/install.sh builds mmcv: which variant, with which toolkit, for which GPUs.

mmcv 2.1.0 has no wheel for today's torch, so it is built from source. Its ``setup.py`` takes
the CUDA branch whenever torch sees a GPU (or ``FORCE_CUDA=1``); a wheel built where no GPU is
visible is CPU-only and fails on the first ``nms`` on ``cuda:0``. This script makes that choice
explicit and checks, in seconds, what would otherwise fail an hour into the build:

    plan     the variant (``TNT_MM_MMCV_OPS=auto|cpu|cuda``), its cache key, the architecture
             list, the parallel jobs, the toolkit and the driver; prints shell assignments
    toolkit  once a toolkit is chosen or installed: ``CUDA_HOME``, the ``libcudart.so`` link,
             and whether nvcc accepts the host compiler; prints shell assignments
    verify   after the install: mmcv's compiled CUDA version, and ``nms``/``RoIAlign`` forward
             and backward on ``cuda:0`` against the CPU where a GPU is visible

Every refusal is one line, ``ERROR: what. Fix: how.``, with exit status 2. Only the standard
library at import time (torch is imported where it is needed), so the tests can run every
decision with stand-in ``nvcc``, ``gcc`` and ``nvidia-smi`` on ``PATH``.
"""
import argparse
import glob
import os
import os.path as osp
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

MODES = ('auto', 'cpu', 'cuda')
# Built when no GPU is visible (a login node, a docker build): Turing to Blackwell, the last with
# PTX so that later GPUs can compile it at load time. CUDA 13 accepts nothing below 7.5; sm_86
# code also runs on sm_89 (Ada), so that one needs no entry of its own.
DEFAULT_ARCHS = ('7.5', '8.0', '8.6', '9.0', '10.0', '12.0+PTX')
MIN_ARCH_CUDA13 = (7, 5)
# One nvcc job of mmcv's largest file takes about 2.7 GB; the C++-only build about 1 GB.
GIB_PER_JOB = {'cuda': 3.0, 'cpu': 1.0}
# The oldest driver for each CUDA major version (CUDA's minor-version compatibility).
MIN_DRIVER = {11: 450, 12: 525, 13: 580}
STANDARD_CUDA_HOME = '/usr/local/cuda'


class PlanError(Exception):
    """A refusal: ``what`` went wrong and the ``fix``, printed as one line."""

    def __init__(self, what: str, fix: str):
        super().__init__(f'{what}. Fix: {fix}.')


@dataclass
class TorchFacts:
    version: str                     # '2.14.1'
    cuda: Optional[str]              # the CUDA torch was built for, '13.0'; None for a CPU build
    gpu_archs: List[str] = field(default_factory=list)  # what torch sees, e.g. ['9.0']


@dataclass
class DriverFacts:
    """What ``nvidia-smi`` reports: the GPUs the driver sees even where torch sees none."""
    gpu_archs: List[str] = field(default_factory=list)
    driver: Optional[str] = None     # '580.159.04'
    cuda: Optional[str] = None       # the newest CUDA the driver supports, '13.0'


def torch_facts() -> TorchFacts:
    import torch
    archs = []
    if torch.cuda.is_available():
        archs = ['{}.{}'.format(*torch.cuda.get_device_capability(i))
                 for i in range(torch.cuda.device_count())]
    return TorchFacts(torch.__version__.split('+')[0], torch.version.cuda, archs)


def run_text(cmd: Sequence[str], timeout: float = 60) -> Optional[str]:
    """The command's stdout and stderr, or None when it cannot be run or fails."""
    try:
        out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout + out.stderr if out.returncode == 0 else None


def driver_facts() -> DriverFacts:
    if shutil.which('nvidia-smi') is None:
        return DriverFacts()
    rows = run_text(['nvidia-smi', '--query-gpu=compute_cap,driver_version',
                     '--format=csv,noheader']) or ''
    archs, drivers = [], []
    for row in rows.strip().splitlines():
        parts = [p.strip() for p in row.split(',')]
        if len(parts) == 2 and re.fullmatch(r'\d+\.\d+', parts[0]):
            archs.append(parts[0])
            drivers.append(parts[1])
    header = run_text(['nvidia-smi']) or ''
    cuda = re.search(r'CUDA Version:\s*(\d+\.\d+)', header)
    return DriverFacts(archs, drivers[0] if drivers else None, cuda.group(1) if cuda else None)


def major_minor(version: str) -> tuple:
    return tuple(int(x) for x in version.split('.')[:2])


def check_driver(torch: TorchFacts, driver: DriverFacts) -> None:
    """A driver older than torch's CUDA makes torch see no GPU: say so rather than build for the
    CPU without a word."""
    if not torch.cuda or not driver.gpu_archs or driver.cuda is None:
        return
    need = major_minor(torch.cuda)[0]
    if major_minor(driver.cuda)[0] < need:
        raise PlanError(
            f'the NVIDIA driver {driver.driver} supports CUDA up to {driver.cuda}, but torch '
            f'{torch.version} is built for CUDA {torch.cuda} (driver >= {MIN_DRIVER.get(need, "?")})',
            'update the driver, or use a torch built for your CUDA (TORCH=system with the '
            "cluster's torch), or build without GPU ops (TNT_MM_MMCV_OPS=cpu)")


def choose_variant(requested: str, torch: TorchFacts, driver: DriverFacts) -> str:
    """'cpu' or 'cuda': ``auto`` is 'cuda' when torch sees a GPU."""
    if requested not in MODES:
        raise PlanError(f'TNT_MM_MMCV_OPS={requested!r} is not one of {", ".join(MODES)}',
                        'set TNT_MM_MMCV_OPS to auto (the default), cpu or cuda')
    if requested == 'cpu':
        return 'cpu'
    if requested == 'cuda' and not torch.cuda:
        raise PlanError(f'TNT_MM_MMCV_OPS=cuda, but torch {torch.version} is a CPU-only build',
                        'install a CUDA build of torch, or use TNT_MM_MMCV_OPS=cpu')
    check_driver(torch, driver)
    if requested == 'cuda' or torch.gpu_archs:
        return 'cuda'
    return 'cpu'


def parse_archs(text: str) -> List[str]:
    return [a for a in re.split(r'[;\s,]+', text.strip()) if a]


def arch_list(env: Dict[str, str], torch: TorchFacts) -> tuple:
    """(architectures, where they came from): the user's TORCH_CUDA_ARCH_LIST, else the visible
    GPUs, else DEFAULT_ARCHS."""
    if env.get('TORCH_CUDA_ARCH_LIST', '').strip():
        archs, source = parse_archs(env['TORCH_CUDA_ARCH_LIST']), 'TORCH_CUDA_ARCH_LIST'
    elif torch.gpu_archs:
        archs, source = sorted(set(torch.gpu_archs), key=major_minor), 'the visible GPUs'
    else:
        archs, source = list(DEFAULT_ARCHS), 'the default list (no GPU visible)'
    for arch in archs:
        if not re.fullmatch(r'\d+\.\d+(\+PTX)?', arch):
            raise PlanError(f'{arch!r} in the architecture list ({source}) is not of the form '
                            f'9.0 or 9.0+PTX', 'write TORCH_CUDA_ARCH_LIST like "8.0;9.0"')
        if torch.cuda and major_minor(torch.cuda)[0] >= 13 and \
                major_minor(arch.split('+')[0]) < MIN_ARCH_CUDA13:
            raise PlanError(f'CUDA {torch.cuda} cannot build for compute capability {arch} '
                            f'({source}); it starts at 7.5',
                            'leave GPUs older than Turing out of TORCH_CUDA_ARCH_LIST')
    return archs, source


def variant_key(variant: str, cuda: Optional[str], archs: Sequence[str]) -> str:
    """The name of a build: 'cpu', or e.g. 'cuda13.0-arch8.0_9.0'. The wheel cache and the venv
    stamp carry it, so a wheel of another variant is never reused."""
    if variant == 'cpu':
        return 'cpu'
    return f'cuda{cuda}-arch' + '_'.join(archs)


def memory_gib() -> float:
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 4.0


def max_jobs(env: Dict[str, str], variant: str, cores: int, mem_gib: float) -> int:
    """The user's MAX_JOBS, else as many as both the cores and the memory allow."""
    if env.get('MAX_JOBS', '').strip():
        value = env['MAX_JOBS'].strip()
        if not value.isdigit() or int(value) < 1:
            raise PlanError(f'MAX_JOBS={value!r} is not a positive whole number',
                            'set MAX_JOBS to the number of parallel compile jobs, e.g. 8')
        return int(value)
    return max(1, min(cores, int(mem_gib / GIB_PER_JOB[variant])))


def nvcc_version(nvcc: str) -> Optional[str]:
    text = run_text([nvcc, '--version'])
    found = re.search(r'release (\d+\.\d+)', text or '')
    return found.group(1) if found else None


def toolkit_homes(env: Dict[str, str]) -> List[str]:
    """The CUDA_HOME candidates in order: the user's, that of the nvcc on PATH, the standard
    one. A candidate must hold bin/nvcc and the runtime headers: an nvcc on PATH may be a
    wrapper script elsewhere (/usr/local/bin/nvcc), whose parent is no toolkit."""
    found = []
    if env.get('CUDA_HOME'):
        found.append(env['CUDA_HOME'])
    on_path = shutil.which('nvcc', path=env.get('PATH'))
    if on_path:
        found.append(osp.dirname(osp.dirname(osp.realpath(on_path))))
    found.append(STANDARD_CUDA_HOME)
    return [home for i, home in enumerate(found) if home not in found[:i] and is_toolkit(home)]


def is_toolkit(home: str) -> bool:
    return (os.access(osp.join(home, 'bin', 'nvcc'), os.X_OK)
            and osp.exists(osp.join(home, 'include', 'cuda_runtime.h')))


def choose_toolkit(env: Dict[str, str], cuda: str) -> tuple:
    """('system', CUDA_HOME) for a toolkit of torch's CUDA version, else ('pip', '') to install
    ``cuda-toolkit[nvcc,cccl]==X.Y.*`` into the venv. A CUDA_HOME the user set must match."""
    user_home = env.get('CUDA_HOME')
    if user_home and not is_toolkit(user_home):
        raise PlanError(f'CUDA_HOME={user_home} holds no bin/nvcc and include/cuda_runtime.h',
                        'point CUDA_HOME at a CUDA toolkit, or unset it')
    for home in toolkit_homes(env):
        found = nvcc_version(osp.join(home, 'bin', 'nvcc'))
        if found and major_minor(found) == major_minor(cuda):
            return 'system', home
        if home == user_home:
            raise PlanError(f'CUDA_HOME={home} holds nvcc {found}, but torch is built for CUDA '
                            f'{cuda}', f'point CUDA_HOME at a CUDA {cuda} toolkit, or unset it '
                            f'to install one into the venv')
    return 'pip', ''


def cudart_link_dir(cuda_home: str, link_root: str) -> Optional[str]:
    """A folder with ``libcudart.so`` for the linker, or None when the toolkit has one. The pip
    toolkit ships only ``libcudart.so.13``; torch links ``-lcudart``."""
    for lib in ('lib64', 'lib'):
        if osp.exists(osp.join(cuda_home, lib, 'libcudart.so')):
            return None
    versioned = sorted(glob.glob(osp.join(cuda_home, 'lib*', 'libcudart.so.*')))
    if not versioned:
        raise PlanError(f'no libcudart.so* under {cuda_home}',
                        'reinstall the toolkit (rm -rf .venv) or set CUDA_HOME to a full one')
    os.makedirs(link_root, exist_ok=True)
    link = osp.join(link_root, 'libcudart.so')
    if osp.lexists(link):
        os.remove(link)
    os.symlink(versioned[0], link)
    return link_root


def check_host_compiler(nvcc: str, cxx: str) -> None:
    """nvcc refuses host compilers newer than it knows: find out on a one-line kernel, not an
    hour into the build."""
    with tempfile.TemporaryDirectory() as tmp:
        src = osp.join(tmp, 'probe.cu')
        with open(src, 'w') as f:
            f.write('__global__ void probe(float *x) { x[0] = 1.0f; }\n')
        try:
            out = subprocess.run([nvcc, '-ccbin', cxx, '-c', src, '-o', osp.join(tmp, 'p.o')],
                                 capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PlanError(f'could not run {nvcc} on a test kernel ({exc})',
                            'check the toolkit under CUDA_HOME') from None
    if out.returncode == 0:
        return
    text = (out.stdout + out.stderr).strip()
    version = run_text([cxx, '-dumpfullversion']) or run_text([cxx, '--version']) or '?'
    if 'unsupported' in text.lower():
        raise PlanError(f'nvcc ({nvcc}) refuses the host compiler {cxx} {version.strip()}',
                        'use a gcc that this CUDA supports, e.g. CXX=g++-12 CC=gcc-12 make install')
    first = text.splitlines()[-1] if text else 'no output'
    raise PlanError(f'nvcc ({nvcc}) failed on a test kernel with {cxx}: {first}',
                    'check the toolkit (CUDA_HOME) and the host compiler (CXX)')


def shell(assignments: Dict[str, object]) -> str:
    return '\n'.join(f'{k}={shlex.quote(str(v))}' for k, v in assignments.items())


def plan(env: Dict[str, str], torch: TorchFacts, driver: DriverFacts, cores: int,
         mem_gib: float) -> Dict[str, object]:
    requested = env.get('TNT_MM_MMCV_OPS', '').strip() or 'auto'
    variant = choose_variant(requested, torch, driver)
    # names of their own, so that evaluating the plan never overwrites the user's settings
    out = {'MMCV_VARIANT': variant, 'TORCH_CUDA': torch.cuda or '',
           'BUILD_JOBS': max_jobs(env, variant, cores, mem_gib)}
    if variant == 'cpu':
        out.update(MMCV_VARIANT_KEY='cpu', BUILD_ARCHS='', ARCH_SOURCE='', TOOLKIT='',
                   TOOLKIT_HOME='')
        return out
    archs, source = arch_list(env, torch)
    toolkit, home = choose_toolkit(env, torch.cuda)
    out.update(MMCV_VARIANT_KEY=variant_key(variant, torch.cuda, archs),
               BUILD_ARCHS=';'.join(archs), ARCH_SOURCE=source, TOOLKIT=toolkit,
               TOOLKIT_HOME=home)
    return out


def toolkit_env(cuda_home: str, cxx: str, link_root: str) -> Dict[str, object]:
    nvcc = osp.join(cuda_home, 'bin', 'nvcc')
    if not os.access(nvcc, os.X_OK):
        raise PlanError(f'no nvcc at {nvcc}', 'reinstall the toolkit or set CUDA_HOME')
    link_dir = cudart_link_dir(cuda_home, link_root)
    check_host_compiler(nvcc, cxx)
    return {'CUDA_HOME': cuda_home, 'CUDART_LINK_DIR': link_dir or '',
            'NVCC_VERSION': nvcc_version(nvcc) or ''}


def verify(variant: str) -> str:
    """After the install: what mmcv was compiled with, and its GPU kernels against the CPU."""
    import torch
    from mmcv.ops import RoIAlign, get_compiling_cuda_version, nms
    compiled = get_compiling_cuda_version()
    if variant == 'cpu':
        return 'mmcv ops for the CPU only'
    if compiled != torch.version.cuda:
        raise PlanError(f'mmcv reports CUDA {compiled!r}, torch is built for {torch.version.cuda}',
                        'delete the cached mmcv wheel and run make install again')
    if not torch.cuda.is_available():
        return f'mmcv ops for CUDA {compiled} (no GPU visible: not run)'
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(200, 2, generator=gen) * 80
    boxes = torch.cat([xy, xy + 8 + torch.rand(200, 2, generator=gen) * 30], 1)
    scores = torch.rand(200, generator=gen)
    keep_cpu = nms(boxes, scores, 0.5)[1]
    keep_gpu = nms(boxes.cuda(), scores.cuda(), 0.5)[1].cpu()
    if not torch.equal(keep_cpu, keep_gpu):
        raise PlanError('nms on cuda:0 keeps other boxes than on the CPU',
                        'rebuild mmcv (delete the cached wheel) and report the versions')
    feats = torch.randn(2, 8, 32, 32, generator=gen)
    rois = torch.cat([torch.tensor([[0.], [1.]]).repeat(4, 1), boxes[:8] / 4], 1)
    results = []
    for device in ('cpu', 'cuda'):
        x = feats.to(device).requires_grad_()
        out = RoIAlign((7, 7), 0.25, sampling_ratio=2, aligned=True)(x, rois.to(device))
        out.square().sum().backward()
        results.append((out.detach().cpu(), x.grad.cpu()))
    for name, cpu, gpu in zip(('RoIAlign forward', 'RoIAlign backward'), *results):
        if not torch.allclose(cpu, gpu, rtol=1e-4, atol=1e-5):
            raise PlanError(f'{name} on cuda:0 differs from the CPU by '
                            f'{(cpu - gpu).abs().max().item():.2e}',
                            'rebuild mmcv (delete the cached wheel) and report the versions')
    return f'mmcv ops for CUDA {compiled}; nms and RoIAlign on cuda:0 equal the CPU'


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = parser.add_subparsers(dest='command', required=True)
    sub.add_parser('plan', help='print the build plan as shell assignments')
    tk = sub.add_parser('toolkit', help='check a toolkit and print CUDA_HOME and link folders')
    tk.add_argument('--cuda-home', required=True)
    tk.add_argument('--cxx', default=os.environ.get('CXX', 'g++'))
    tk.add_argument('--link-root', required=True, help='where to put a libcudart.so link')
    ver = sub.add_parser('verify', help='check the installed mmcv')
    ver.add_argument('--variant', choices=('cpu', 'cuda'), required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == 'plan':
            print(shell(plan(dict(os.environ), torch_facts(), driver_facts(),
                             os.cpu_count() or 1, memory_gib())))
        elif args.command == 'toolkit':
            print(shell(toolkit_env(args.cuda_home, args.cxx, args.link_root)))
        else:
            print(verify(args.variant))
    except PlanError as exc:
        print(f'ERROR: {exc}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
