"""The decisions of tools/mmcv_build.py, which tools/install.sh follows, without building: the
variant, its cache key, the architecture list, the toolkit, the jobs, and the early refusals,
with stand-in nvcc, g++ and nvidia-smi on PATH."""
import os
import os.path as osp
import stat
import subprocess
import sys

import pytest
from helpers import load_tool

mmcv_build = load_tool('tools/mmcv_build.py')
TorchFacts, DriverFacts, PlanError = mmcv_build.TorchFacts, mmcv_build.DriverFacts, mmcv_build.PlanError
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

GPU_TORCH = TorchFacts('2.14.1', '13.0', ['9.0'])
HIDDEN_GPU_TORCH = TorchFacts('2.14.1', '13.0', [])
CPU_TORCH = TorchFacts('2.14.1', None, [])
NO_DRIVER = DriverFacts()


def write_tool(folder, name: str, script: str) -> str:
    path = osp.join(folder, name)
    with open(path, 'w') as f:
        f.write('#!/bin/sh\n' + script)
    os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)
    return path


def fake_toolkit(root, version: str, compile_error: str = '', cudart: str = 'libcudart.so.13'):
    """A CUDA_HOME whose nvcc reports ``version`` and compiles, or fails with ``compile_error``."""
    os.makedirs(osp.join(root, 'bin'))
    os.makedirs(osp.join(root, 'lib'))
    os.makedirs(osp.join(root, 'include'))
    open(osp.join(root, 'include', 'cuda_runtime.h'), 'w').close()
    open(osp.join(root, 'lib', cudart), 'w').close()
    compile_step = (f'echo "{compile_error}" >&2; exit 1' if compile_error
                    else 'for a; do last=$a; done; touch "$last"')
    write_tool(osp.join(root, 'bin'), 'nvcc', f'''
if [ "$1" = --version ]; then echo "Cuda compilation tools, release {version}, V{version}.88"; exit 0; fi
{compile_step}
''')
    return str(root)


def fake_nvidia_smi(folder, cap: str, driver: str, cuda: str) -> None:
    write_tool(folder, 'nvidia-smi', f'''
case "$1" in --query-gpu=*) echo "{cap}, {driver}";; *) echo "| NVIDIA-SMI {driver}   Driver Version: {driver}   CUDA Version: {cuda} |";; esac
''')


@pytest.fixture(autouse=True)
def _no_standard_toolkit(monkeypatch, tmp_path):
    """This machine's own /usr/local/cuda must not decide the toolkit tests."""
    monkeypatch.setattr(mmcv_build, 'STANDARD_CUDA_HOME', str(tmp_path / 'no-cuda'))


def plan(env=None, torch=GPU_TORCH, driver=NO_DRIVER, cores=16, mem=120.0):
    return mmcv_build.plan({'PATH': '/nonexistent', **(env or {})}, torch, driver, cores, mem)


# the variant

def test_auto_builds_cuda_ops_only_where_torch_sees_a_gpu():
    assert plan()['MMCV_VARIANT'] == 'cuda'
    assert plan(torch=HIDDEN_GPU_TORCH)['MMCV_VARIANT'] == 'cpu'
    assert plan(torch=CPU_TORCH)['MMCV_VARIANT'] == 'cpu'


def test_cpu_and_cuda_are_taken_as_asked():
    assert plan({'TNT_MM_MMCV_OPS': 'cpu'})['MMCV_VARIANT'] == 'cpu'
    # a login node without a GPU builds for its compute nodes
    assert plan({'TNT_MM_MMCV_OPS': 'cuda'}, torch=HIDDEN_GPU_TORCH)['MMCV_VARIANT'] == 'cuda'


def test_cuda_ops_need_a_cuda_build_of_torch():
    with pytest.raises(PlanError, match=r'TNT_MM_MMCV_OPS=cuda.*CPU-only build.*Fix:'):
        plan({'TNT_MM_MMCV_OPS': 'cuda'}, torch=CPU_TORCH)


def test_an_unknown_mode_is_named():
    with pytest.raises(PlanError, match=r"TNT_MM_MMCV_OPS='gpu' is not one of auto, cpu, cuda"):
        plan({'TNT_MM_MMCV_OPS': 'gpu'})


# the cache key: a wheel of another variant is never reused

def test_each_variant_has_its_own_key():
    keys = {plan({'TNT_MM_MMCV_OPS': 'cpu'})['MMCV_VARIANT_KEY'],
            plan()['MMCV_VARIANT_KEY'],
            plan({'TORCH_CUDA_ARCH_LIST': '8.0;9.0'})['MMCV_VARIANT_KEY'],
            plan(torch=TorchFacts('2.14.1', '12.8', ['9.0']))['MMCV_VARIANT_KEY']}
    assert keys == {'cpu', 'cuda13.0-arch9.0', 'cuda13.0-arch8.0_9.0', 'cuda12.8-arch9.0'}


def test_install_sh_keys_the_wheel_cache_and_the_stamp_by_the_variant():
    script = open(osp.join(ROOT, 'tools', 'install.sh')).read()
    assert 'WHEEL_DIR="$CACHE_ROOT/mmcv-$MMCV_VERSION-torch$TORCH_INSTALLED-$PYTAG-$MMCV_VARIANT_KEY"' in script
    assert script.count('"$(stamp_value) $TORCH_MODE $MMCV_VARIANT_KEY"') == 2  # written, compared


# the architectures

def test_arch_list_from_the_user_then_the_gpus_then_the_default():
    assert plan({'TORCH_CUDA_ARCH_LIST': '8.0 9.0+PTX'})['BUILD_ARCHS'] == '8.0;9.0+PTX'
    two_gpus = TorchFacts('2.14.1', '13.0', ['9.0', '8.0', '9.0'])
    assert plan(torch=two_gpus)['BUILD_ARCHS'] == '8.0;9.0'
    default = plan({'TNT_MM_MMCV_OPS': 'cuda'}, torch=HIDDEN_GPU_TORCH)
    assert default['BUILD_ARCHS'] == ';'.join(mmcv_build.DEFAULT_ARCHS)
    assert 'default' in default['ARCH_SOURCE']
    assert all(mmcv_build.major_minor(a.split('+')[0]) >= (7, 5) for a in mmcv_build.DEFAULT_ARCHS)


def test_archs_that_cuda_13_cannot_build_are_refused_before_the_build():
    with pytest.raises(PlanError, match=r'CUDA 13.0 cannot build for compute capability 7.0'):
        plan({'TORCH_CUDA_ARCH_LIST': '7.0;9.0'})
    with pytest.raises(PlanError, match=r"'sm_90' in the architecture list"):
        plan({'TORCH_CUDA_ARCH_LIST': 'sm_90'})


# the jobs

def test_jobs_follow_the_cores_and_the_memory_unless_set():
    assert plan(cores=16, mem=120)['BUILD_JOBS'] == 16
    assert plan(cores=16, mem=24)['BUILD_JOBS'] == 8           # 3 GiB a CUDA job
    assert plan({'TNT_MM_MMCV_OPS': 'cpu'}, cores=2, mem=24)['BUILD_JOBS'] == 2
    assert plan(cores=4, mem=2)['BUILD_JOBS'] == 1
    assert plan({'MAX_JOBS': '3'})['BUILD_JOBS'] == 3
    with pytest.raises(PlanError, match=r"MAX_JOBS='many'"):
        plan({'MAX_JOBS': 'many'})


# the toolkit and CUDA_HOME

def test_a_system_toolkit_of_torchs_cuda_is_used_and_named_explicitly(tmp_path):
    home = fake_toolkit(tmp_path / 'cuda-13.0', '13.0')
    out = plan({'CUDA_HOME': home})
    assert (out['TOOLKIT'], out['TOOLKIT_HOME']) == ('system', home)


def test_a_toolkit_found_on_path_gives_its_own_home(tmp_path):
    home = fake_toolkit(tmp_path / 'cuda', '13.0')
    out = plan({'PATH': osp.join(home, 'bin')})
    assert (out['TOOLKIT'], out['TOOLKIT_HOME']) == ('system', home)


def test_an_nvcc_wrapper_on_path_is_followed_to_no_false_home(tmp_path, monkeypatch):
    """/usr/local/bin/nvcc as a script calling the real one: /usr/local is no toolkit; the
    standard location is taken instead."""
    home = fake_toolkit(tmp_path / 'cuda-13.0', '13.0')
    wrappers = tmp_path / 'bin'
    wrappers.mkdir()
    write_tool(str(wrappers), 'nvcc', f'exec {home}/bin/nvcc "$@"\n')
    assert plan({'PATH': str(wrappers)})['TOOLKIT'] == 'pip'
    monkeypatch.setattr(mmcv_build, 'STANDARD_CUDA_HOME', home)
    assert plan({'PATH': str(wrappers)})['TOOLKIT_HOME'] == home


def test_a_cuda_home_without_a_toolkit_is_refused(tmp_path):
    with pytest.raises(PlanError, match=r'CUDA_HOME=.* holds no bin/nvcc'):
        plan({'CUDA_HOME': str(tmp_path)})


def test_another_cuda_version_on_path_means_the_pip_toolkit(tmp_path):
    home = fake_toolkit(tmp_path / 'cuda-12.4', '12.4')
    assert plan({'PATH': osp.join(home, 'bin')})['TOOLKIT'] == 'pip'
    assert plan()['TOOLKIT'] == 'pip'


def test_a_cuda_home_of_another_version_is_refused(tmp_path):
    home = fake_toolkit(tmp_path / 'cuda-12.4', '12.4')
    with pytest.raises(PlanError, match=r'CUDA_HOME=.*holds nvcc 12.4, but torch is built for CUDA 13.0'):
        plan({'CUDA_HOME': home})


def test_the_toolkit_step_links_libcudart_for_the_linker(tmp_path):
    home = fake_toolkit(tmp_path / 'cu13', '13.0')       # ships only libcudart.so.13, as pip's
    out = mmcv_build.toolkit_env(home, 'g++', str(tmp_path / 'links'))
    assert out['CUDA_HOME'] == home and out['NVCC_VERSION'] == '13.0'
    link = osp.join(out['CUDART_LINK_DIR'], 'libcudart.so')
    assert os.readlink(link) == osp.join(home, 'lib', 'libcudart.so.13')
    full = fake_toolkit(tmp_path / 'full', '13.0', cudart='libcudart.so')
    assert mmcv_build.toolkit_env(full, 'g++', str(tmp_path / 'links2'))['CUDART_LINK_DIR'] == ''


# the early refusals, each one line with its fix

def test_a_gcc_that_nvcc_refuses_is_one_line(tmp_path):
    home = fake_toolkit(tmp_path / 'cu13', '13.0', compile_error=(
        'error -- unsupported GNU version! gcc versions later than 15 are not supported!'))
    gxx = write_tool(str(tmp_path), 'g++-16', 'echo 16.1.0\n')
    with pytest.raises(PlanError) as info:
        mmcv_build.toolkit_env(home, gxx, str(tmp_path / 'links'))
    message = str(info.value)
    assert 'refuses the host compiler' in message and '16.1.0' in message
    assert 'Fix: use a gcc that this CUDA supports' in message and '\n' not in message


def test_a_driver_too_old_for_torchs_cuda_is_one_line(tmp_path, monkeypatch):
    fake_nvidia_smi(str(tmp_path), '9.0', '550.54.15', '12.4')
    monkeypatch.setenv('PATH', f'{tmp_path}:{os.environ["PATH"]}')
    driver = mmcv_build.driver_facts()
    assert driver == DriverFacts(['9.0'], '550.54.15', '12.4')
    # torch sees no GPU with such a driver; auto must not quietly build for the CPU
    with pytest.raises(PlanError, match=r'driver 550.54.15 supports CUDA up to 12.4, but torch '
                                        r'2.14.1 is built for CUDA 13.0 \(driver >= 580\). Fix:'):
        plan(torch=HIDDEN_GPU_TORCH, driver=driver)
    assert plan({'TNT_MM_MMCV_OPS': 'cpu'}, torch=HIDDEN_GPU_TORCH, driver=driver)['MMCV_VARIANT'] == 'cpu'


def test_a_current_driver_passes(tmp_path, monkeypatch):
    fake_nvidia_smi(str(tmp_path), '9.0', '580.159.04', '13.0')
    monkeypatch.setenv('PATH', f'{tmp_path}:{os.environ["PATH"]}')
    assert plan(driver=mmcv_build.driver_facts())['MMCV_VARIANT'] == 'cuda'


def test_the_cli_prints_shell_assignments_or_one_error_line(tmp_path):
    env = {**os.environ, 'TNT_MM_MMCV_OPS': 'cpu'}
    out = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'mmcv_build.py'), 'plan'],
                         env=env, capture_output=True, text=True, check=True).stdout
    assert 'MMCV_VARIANT=cpu' in out and 'MMCV_VARIANT_KEY=cpu' in out
    env['TNT_MM_MMCV_OPS'] = 'gpu'
    bad = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'mmcv_build.py'), 'plan'],
                         env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stdout == ''
    assert bad.stderr.count('\n') == 1 and bad.stderr.startswith('ERROR: ')


@pytest.mark.parametrize('settings, expected', [
    ({'TORCH': 'conda'}, 'TORCH=conda is not pip or system'),
    ({'WHEELHOUSE': '/nonexistent/wheels'}, 'WHEELHOUSE=/nonexistent/wheels is not a folder'),
])
def test_install_sh_refuses_bad_settings_at_once(tmp_path, settings, expected):
    env = {**os.environ, 'VENV': str(tmp_path / 'venv'), **settings}
    out = subprocess.run(['bash', osp.join(ROOT, 'tools', 'install.sh')], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and expected in out.stderr and 'Fix:' in out.stderr
    assert not osp.exists(tmp_path / 'venv')


@pytest.mark.parametrize('over_system, torch_mode', [('true', 'pip'), ('false', 'system')])
def test_install_sh_refuses_a_venv_of_the_other_torch_mode(tmp_path, over_system, torch_mode):
    venv = tmp_path / 'venv'
    venv.mkdir()
    (venv / 'pyvenv.cfg').write_text(f'home = /usr/bin\ninclude-system-site-packages = '
                                     f'{over_system}\n')
    env = {**os.environ, 'VENV': str(venv), 'TORCH': torch_mode, 'PYTHON': sys.executable}
    out = subprocess.run(['bash', osp.join(ROOT, 'tools', 'install.sh')], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert f'was made for the other torch (include-system-site-packages = {over_system}), ' \
           f'TORCH={torch_mode} now. Fix: rm -rf' in out.stderr
