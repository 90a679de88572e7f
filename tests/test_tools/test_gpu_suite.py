"""The prepared GPU run (tools/analysis/gpu_suite.py) and the wheelhouse it travels with
(tools/wheelhouse.py), on the CPU: the plan, the wheelhouse checks, the time budgets."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
from helpers import load_tool

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SUITE = osp.join(ROOT, 'tools', 'analysis', 'gpu_suite.py')
gpu_suite = load_tool('tools/analysis/gpu_suite.py')
wheelhouse = load_tool('tools/wheelhouse.py')


def fake_wheelhouse(folder, wheels=('mmengine==0.10.7', 'model_index==0.1.11'), drop=(),
                    python='3.12', torch='system'):
    """A wheelhouse folder with its record and empty files named as pip names them."""
    folder.mkdir()
    record = {'python_version': python, 'torch': torch, 'mmcv_ops': 'cpu', 'cuda': '',
              'mmcv_sdist': 'mmcv-2.1.0.tar.gz', 'wheels': list(wheels), 'left_out': []}
    (folder / 'wheelhouse.json').write_text(json.dumps(record))
    (folder / 'mmcv-2.1.0.tar.gz').write_bytes(b'')
    for spec in wheels:
        if spec not in drop:
            name, version = spec.split('==')
            (folder / f'{name.replace("-", "_")}-{version}-py3-none-any.whl').write_bytes(b'')
    return str(folder)


def dry_run(wheelhouse_dir):
    return subprocess.run([sys.executable, SUITE, '--dry-run', '--wheelhouse', wheelhouse_dir],
                          capture_output=True, text=True, timeout=60)


def test_dry_run_prints_the_plan_in_order_and_accepts_a_complete_wheelhouse(tmp_path):
    out = dry_run(fake_wheelhouse(tmp_path / 'whl'))
    assert out.returncode == 0, out.stderr
    names = [s.name for s in gpu_suite.STEPS]
    positions = [out.stdout.index(f'{name} ') for name in names]
    assert positions == sorted(positions)
    # quick and sure first, the long CUDA build of mmcv last but its check
    assert names[:2] == ['gpu', 'install_cpu'] and names[-2] == 'install_cuda'
    assert 'TORCH=system WHEELHOUSE=.whl' in out.stdout
    assert f'{len(names)} steps' in out.stdout


def test_dry_run_names_what_the_wheelhouse_lacks(tmp_path):
    out = dry_run(fake_wheelhouse(tmp_path / 'whl', drop=('model_index==0.1.11',)))
    assert out.returncode == 2 and 'lacks model_index==0.1.11' in out.stderr


def test_dry_run_refuses_a_wheelhouse_for_another_target(tmp_path):
    out = dry_run(fake_wheelhouse(tmp_path / 'whl', python='3.11', torch='pip'))
    assert out.returncode == 2 and 'made for Python 3.11 with torch pip' in out.stderr
    missing = dry_run(str(tmp_path / 'nowhere'))
    assert missing.returncode == 2 and 'wheelhouse.json is missing. Fix: make wheelhouse' in missing.stderr


def test_each_step_gets_its_budget_and_a_run_keeps_what_it_measured(tmp_path, monkeypatch):
    steps = [gpu_suite.Step('quick', 'echo "coco/bbox_mAP: 0.500"', 10, 1, parse=gpu_suite.COCO),
             gpu_suite.Step('slow', 'sleep 30', 1, 1),
             gpu_suite.Step('broken', 'echo oops; exit 3', 10, 1),
             gpu_suite.Step('late', 'echo never', 10, 100)]
    monkeypatch.setattr(gpu_suite, 'STEPS', steps)
    assert gpu_suite.main(['--out', str(tmp_path), '--budget', '20']) == 0
    report = json.loads((tmp_path / 'gpu_suite.json').read_text())['steps']
    assert report['quick']['status'] == 'ok' and report['quick']['bbox_mAP'] == 0.5
    assert report['slow']['status'] == 'timed out after 1 s' and report['slow']['seconds'] < 10
    assert report['broken']['status'] == 'failed (3)' and report['broken']['tail'] == ['oops']
    assert report['late']['status'].startswith('skipped')
    assert 'oops' in (tmp_path / 'gpu_suite.log').read_text()


def test_the_detection_ops_step_compares_with_mmcv_on_the_cpu():
    """The step's child on the CPU, torchvision's kernels against mmcv's: all equal."""
    env = {**os.environ, 'TNT_MM_DETECTION_OPS': 'torchvision'}
    out = subprocess.run([sys.executable, SUITE, '--child', 'detection_ops', 'cpu'], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    result = gpu_suite.json_lines(out.stdout)
    assert result['nms_equal'] and result['batched_nms_equal']
    assert result['roi_align_forward_max_diff'] < 1e-5
    assert result['roi_align_backward_max_diff'] < 1e-4
    assert result['kernels'] == {'nms on cpu': 'torchvision', 'roi_align on cpu': 'torchvision'}


def test_the_wheelhouse_leaves_out_what_the_target_has():
    leave = wheelhouse.leave_out
    assert leave('torch', 'system', 'cpu', set()) and leave('nvidia-cublas', 'system', 'cpu', set())
    assert not leave('torch', 'pip', 'cpu', set())
    # a CUDA build of mmcv on a system torch still needs the compiler wheels
    assert not leave('nvidia-cuda-nvcc', 'system', 'cuda', set())
    assert leave('nvidia-cuda-nvcc', 'system', 'cpu', set())
    assert leave('Model_Index', 'pip', 'cpu', {'model-index'})
    assert leave('opencv-python', 'pip', 'cpu', {'opencv-python-headless'})
    assert not leave('opencv-python', 'pip', 'cpu', set())


def test_the_wheelhouse_check_compares_files_with_the_record(tmp_path):
    complete = fake_wheelhouse(tmp_path / 'a')
    assert wheelhouse.missing(complete) == []
    partial = fake_wheelhouse(tmp_path / 'b', drop=('mmengine==0.10.7',))
    (tmp_path / 'b' / 'mmcv-2.1.0.tar.gz').unlink()
    assert wheelhouse.missing(partial) == ['mmcv-2.1.0.tar.gz', 'mmengine==0.10.7']


def test_the_gpu_image_list_leaves_setuptools_in():
    """The install wants setuptools<80, which the image's may not be."""
    names = {line.strip() for line in open(osp.join(ROOT, 'tools', 'analysis',
                                                      'gpu_image_packages.txt'))
             if line.strip() and not line.startswith('#')}
    assert 'setuptools' not in names and {'torch', 'torchvision', 'timm'} <= names


@pytest.mark.slow
def test_detector_step_runs_the_three_backbones(tmp_path):
    out = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'analysis', 'detector_step.py'),
                          '--device', 'cpu', '--size', '128', '160', '--batch', '1',
                          '--warmup', '1', '--steps', '1'],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    rows = result['rows']
    assert set(rows) == {'TNT-S', 'ResNet-50', 'DeiT-S'}
    # the paper's supplement: 48.1M with TNT-S, 46.4M with DeiT-S (Table 2); mmdet's R50 41.8M
    assert (rows['TNT-S']['params_m'], rows['DeiT-S']['params_m']) == (48.1, 46.4)
    assert rows['ResNet-50']['params_m'] == 41.8
    assert rows['TNT-S']['time_vs_DeiT-S'] > 0


@pytest.mark.slow
def test_gpu_trace_runs_at_toy_sizes_on_the_cpu():
    """The profile step's script end to end (on the CPU the device columns stay empty)."""
    out = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'analysis', 'gpu_trace.py'),
                          '--device', 'cpu', '--amp', 'none', '--train-size', '32',
                          '--train-batch', '2', '--det-size', '64', '96', '--det-batch', '1'],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])['results']
    assert set(results) == {f'{phase} {row}' for phase in ('train', 'det')
                            for row in ('tnt_mm TNT-S [auto]', 'timm DeiT-S')}
    assert all(row['wall_ms'] > 0 for row in results.values())
