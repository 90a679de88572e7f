"""Download everything ``make install`` needs into one folder, for an install with no network.

    python3 tools/wheelhouse.py DIR [--python-version 3.12] [--torch pip|system]
                                    [--mmcv-ops cpu|cuda] [--have FILE]
    WHEELHOUSE=DIR make install        # then installs from DIR alone (PIP_NO_INDEX=1)

pip resolves the whole install for the target Python and platform without downloading it
(``pip install --dry-run --report``), and the chosen files are then fetched one by one:
wheels only, plus mmcv's source distribution, which ``make install`` builds. ``--torch system``
leaves out torch, torchvision, Triton and the CUDA libraries (the environment has them);
``--mmcv-ops cuda`` adds the CUDA compiler wheels (``cuda-toolkit[nvcc,cccl]``) of torch's CUDA;
``--have FILE`` leaves out the packages named in FILE (one name a line), which the target
already has. ``DIR/wheelhouse.json`` records what was resolved and what was left out, and
``--check`` compares a folder with its record.
"""
import argparse
import glob
import json
import os
import os.path as osp
import re
import subprocess
import sys
import tarfile
import tempfile

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONSTRAINTS = osp.join(ROOT, 'requirements', 'constraints.txt')
REQUIREMENTS = ['runtime.txt', 'mminstall.txt', 'tests.txt', 'deploy.txt']
BASE_TOOLS = ['pip', 'wheel', 'setuptools>=77.0.3,<80', 'ninja', 'psutil']
# What an environment that brings its own torch already has (TORCH=system), and of that, the
# compiler wheels that a CUDA build of mmcv may still need.
TORCH_FAMILY = re.compile(r'^(torch|torchvision|triton|nvidia-.*|cuda-.*)$')
CUDA_COMPILER = re.compile(r'^(cuda-toolkit|nvidia-cuda-(nvcc|crt|cccl).*|nvidia-nvvm.*)$')
# pip matches manylinux tags exactly: name every glibc a wheel may be tagged for.
PLATFORMS = ([f'manylinux_2_{n}_x86_64' for n in range(5, 40)]
             + ['manylinux2014_x86_64', 'manylinux2010_x86_64', 'manylinux1_x86_64',
                'linux_x86_64'])


def normalise(name: str) -> str:
    return re.sub(r'[-_.]+', '-', name).lower()


def pin(name: str) -> str:
    for line in open(CONSTRAINTS):
        if line.startswith(f'{name}=='):
            return line.split('==')[1].split()[0]
    raise SystemExit(f'ERROR: requirements/constraints.txt pins no {name}')


def target_args(python_version: str) -> list:
    args = ['--only-binary=:all:', '--python-version', python_version, '--implementation', 'cp']
    for platform in PLATFORMS:
        args += ['--platform', platform]
    return args


def pip(*args, env=None) -> None:
    cmd = [sys.executable, '-m', 'pip', '--disable-pip-version-check', '-q', *args]
    subprocess.run(cmd, check=True, env=env)


def download_mmcv_sdist(dest: str) -> str:
    """pip prepares an sdist's metadata even to download it; mmcv's setup.py imports
    pkg_resources, which setuptools 80 and later no longer ship, so its build environment is
    held below 80 (a constraint in the environment reaches that inner pip)."""
    with tempfile.NamedTemporaryFile('w', suffix='.txt') as constraint:
        constraint.write('setuptools<80\n')
        constraint.flush()
        pip('download', '--no-deps', '--no-binary', ':all:', '-d', dest,
            f'mmcv=={pin("mmcv")}', env={**os.environ, 'PIP_CONSTRAINT': constraint.name})
    return osp.join(dest, f'mmcv-{pin("mmcv")}.tar.gz')


def mmcv_requirements(sdist: str) -> list:
    """mmcv's runtime requirements, read from its source distribution (it has no wheel)."""
    with tarfile.open(sdist) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith('requirements/runtime.txt'))
        lines = tar.extractfile(member).read().decode().splitlines()
    reqs = [line.split('#')[0].strip() for line in lines]
    # setup.py chooses between the two OpenCV builds; opencv-python where neither is present
    return [r for r in reqs if r] + ['opencv-python>=3']


def top_level(sdist: str, mmcv_ops: str, cuda: str) -> list:
    reqs = list(BASE_TOOLS) + mmcv_requirements(sdist)
    for name in REQUIREMENTS:
        for line in open(osp.join(ROOT, 'requirements', name)):
            line = line.split('#')[0].strip()
            if line and not line.startswith('mmcv'):
                reqs.append(line)
    reqs += [f'torch=={pin("torch")}', f'torchvision=={pin("torchvision")}']
    if mmcv_ops == 'cuda':
        reqs.append(f'cuda-toolkit[nvcc,cccl]=={cuda}.*')
    return reqs


def resolve(reqs: list, python_version: str) -> list:
    """[(name, version)] of the whole install, as pip resolves it for the target."""
    with tempfile.TemporaryDirectory() as tmp:
        report = osp.join(tmp, 'report.json')
        pip('install', '--dry-run', '--ignore-installed', '--report', report, '--target',
            osp.join(tmp, 'target'), *target_args(python_version), '-c', CONSTRAINTS, *reqs)
        with open(report) as f:
            chosen = json.load(f)['install']
    return sorted((item['metadata']['name'], item['metadata']['version']) for item in chosen)


def torch_cuda(resolved: list) -> str:
    """The CUDA version of the resolved torch: that of its CUDA runtime library."""
    for name, version in resolved:
        if normalise(name) == 'nvidia-cuda-runtime' or normalise(name).startswith('nvidia-cuda-runtime-cu'):
            return '.'.join(version.split('.')[:2])
    raise SystemExit('ERROR: the resolved torch has no CUDA runtime; use --mmcv-ops cpu')


def leave_out(name: str, torch_mode: str, mmcv_ops: str, have: set) -> bool:
    """Whether the target already has package ``name``."""
    name = normalise(name)
    if name in have:
        return True
    # any OpenCV build serves cv2 (tools/install.sh installs mmengine over it)
    if name == 'opencv-python' and any(h.startswith('opencv-') for h in have):
        return True
    wanted_compiler = mmcv_ops == 'cuda' and CUDA_COMPILER.match(name)
    return bool(torch_mode == 'system' and TORCH_FAMILY.match(name) and not wanted_compiler)


def build(dest: str, python_version: str, torch_mode: str, mmcv_ops: str, have: set) -> dict:
    os.makedirs(dest, exist_ok=True)
    print(f'[wheelhouse] mmcv {pin("mmcv")} source distribution')
    sdist = download_mmcv_sdist(dest)
    print(f'[wheelhouse] resolving the install for Python {python_version} (no download)')
    resolved = resolve(top_level(sdist, 'cpu', ''), python_version)
    cuda = ''
    if mmcv_ops == 'cuda':
        cuda = torch_cuda(resolved)
        resolved = resolve(top_level(sdist, 'cuda', cuda), python_version)
    left_out = [(n, v) for n, v in resolved if leave_out(n, torch_mode, mmcv_ops, have)]
    wanted = [(n, v) for n, v in resolved if (n, v) not in left_out]
    print(f'[wheelhouse] downloading {len(wanted)} wheels ({len(left_out)} left out)')
    pip('download', '--no-deps', '-d', dest, *target_args(python_version),
        *[f'{n}=={v}' for n, v in wanted])
    record = {'python_version': python_version, 'torch': torch_mode, 'mmcv_ops': mmcv_ops,
              'cuda': cuda, 'mmcv_sdist': osp.basename(sdist),
              'wheels': [f'{n}=={v}' for n, v in wanted],
              'left_out': [f'{n}=={v}' for n, v in left_out]}
    with open(osp.join(dest, 'wheelhouse.json'), 'w') as f:
        json.dump(record, f, indent=1)
    return record


def missing(dest: str) -> list:
    """What the folder's record lists and the folder lacks."""
    with open(osp.join(dest, 'wheelhouse.json')) as f:
        record = json.load(f)
    files = {osp.basename(p) for p in glob.glob(osp.join(dest, '*'))}
    wheel_names = {(normalise(f.split('-')[0]), f.split('-')[1]) for f in files
                   if f.endswith('.whl')}
    lost = [] if record['mmcv_sdist'] in files else [record['mmcv_sdist']]
    for spec in record['wheels']:
        name, version = spec.split('==')
        if (normalise(name), version) not in wheel_names:
            lost.append(spec)
    return lost


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('dest')
    parser.add_argument('--python-version', default='{}.{}'.format(*sys.version_info[:2]))
    parser.add_argument('--torch', choices=('pip', 'system'), default='pip')
    parser.add_argument('--mmcv-ops', choices=('cpu', 'cuda'), default='cpu')
    parser.add_argument('--have', help='a file of package names the target already has')
    parser.add_argument('--check', action='store_true',
                        help='only compare DEST with its wheelhouse.json')
    args = parser.parse_args(argv)
    if args.check:
        lost = missing(args.dest)
        if lost:
            print(f'ERROR: {args.dest} lacks {", ".join(lost)}. Fix: make wheelhouse '
                  f'WHEELHOUSE={args.dest} again.', file=sys.stderr)
            return 2
        print(f'[wheelhouse] {args.dest} is complete')
        return 0
    have = set()
    if args.have:
        have = {normalise(line.split('#')[0].strip()) for line in open(args.have)
                if line.split('#')[0].strip()}
    record = build(args.dest, args.python_version, args.torch, args.mmcv_ops, have)
    size = sum(osp.getsize(p) for p in glob.glob(osp.join(args.dest, '*')))
    print(f'[wheelhouse] {args.dest}: {len(record["wheels"])} wheels and the mmcv source, '
          f'{size / 2**20:.0f} MiB, for Python {args.python_version} '
          f'(torch: {args.torch}, mmcv ops: {args.mmcv_ops})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
