"""tools/analysis/benchmark.py: the interleaved timing that every figure of its tables uses, the
row names its one model factory reads, the memory child, the ``gpu`` suite run end to end at
toy sizes and the size sweep."""
import importlib.util
import json
import os.path as osp
import subprocess
import sys
import time

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def load_benchmark():
    spec = importlib.util.spec_from_file_location(
        'benchmark', osp.join(ROOT, 'tools', 'analysis', 'benchmark.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rounds_interleave_and_medians_ignore_one_slow_round(capsys):
    benchmark = load_benchmark()
    calls = []
    # per call: warm-up, then three timed rounds; one disturbed round must not move the median
    delays = {'slow': iter([0.002] * 4), 'fast': iter([0.0, 0.0, 0.05, 0.0])}

    def job(name):
        def run():
            calls.append(name)
            time.sleep(next(delays[name]))
        return run

    medians = benchmark.interleaved({'slow': job('slow'), 'fast': job('fast')}, rounds=3,
                                    device='cpu', warmup=1, label='toy', verbose=True)
    # one warm-up round, then three timed ones, each running both jobs once: drifts hit both
    assert calls[:2] == ['slow', 'fast']
    assert all(sorted(calls[i:i + 2]) == ['fast', 'slow'] for i in range(2, 8, 2))
    assert medians['fast'] < 0.02
    assert medians['slow'] >= 0.002
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(':')[0] for line in printed] == ['toy slow', 'toy fast']
    assert len(printed[1].split(':')[1].split()) == 3 + 1  # three times and the unit


def test_round_order_varies_so_no_job_always_follows_the_same_one():
    benchmark = load_benchmark()
    calls = []
    names = ('a', 'b', 'c', 'd')

    def job(name):
        return lambda: calls.append(name)

    def run(seed):
        calls.clear()
        benchmark.interleaved({n: job(n) for n in names}, rounds=40, device='cpu', warmup=0,
                              seed=seed)
        return list(calls)

    sequence = run(0)
    rounds = [sequence[i:i + 4] for i in range(0, len(sequence), 4)]
    assert all(sorted(r) == list(names) for r in rounds)
    predecessors = {n: {p for p, c in zip(sequence, sequence[1:]) if c == n} for n in names}
    # every job runs right after each of the others at some point
    assert all(predecessors[n] >= set(names) - {n} for n in names), predecessors
    assert run(0) == sequence  # seeded: a run can be repeated
    assert run(1) != sequence


def test_row_names_say_model_backend_and_options():
    benchmark = load_benchmark()
    assert benchmark.parse_row('tnt_mm TNT-S') == dict(
        model='tnt_mm TNT-S', backend='auto', fused=False, with_cp=False, compiled=False)
    assert benchmark.parse_row('tnt_mm TNT-S [triton, fused] compiled') == dict(
        model='tnt_mm TNT-S', backend='triton', fused=True, with_cp=False, compiled=True)
    assert benchmark.parse_row('tnt_mm TNT-S with_cp')['with_cp']
    assert benchmark.parse_row('timm DeiT-S compiled')['compiled']
    for bad in ('timm DeiT-S [triton]', 'timm TNT-S with_cp', 'ResNet-50'):
        with pytest.raises(ValueError, match='unknown row'):
            benchmark.parse_row(bad)


def test_one_factory_builds_every_row_on_the_same_weights():
    """tnt_mm's TNT-S (any backend) and timm's TNT-S give the same class token: the factory
    loads one seeded timm TNT-S into both; at detection size with the pyramid tnt_mm and DeiT-S
    return four FPN levels."""
    import torch
    benchmark = load_benchmark()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        ours = benchmark.build('tnt_mm TNT-S [reference]', (224, 224), 'cpu')
        timm_tnt = benchmark.build('timm TNT-S', (224, 224), 'cpu')
        assert torch.allclose(ours(x), timm_tnt(x), atol=1e-4)
        for name in ('tnt_mm TNT-S', 'timm DeiT-S'):
            levels = benchmark.build(name, (64, 96), 'cpu', 'pyramid')(
                torch.randn(1, 3, 64, 96))
            assert [tuple(t.shape[2:]) for t in levels] == [(16, 24), (8, 12), (4, 6), (2, 3)]


def test_memory_child_reports_a_peak():
    benchmark = load_benchmark()
    train = benchmark.in_child('train', 'timm DeiT-S', '32', '32', device='cpu')
    forward = benchmark.in_child('forward', 'timm DeiT-S', '32', '32', device='cpu')
    assert 0.05 < train['peak_gb'] < 20  # the whole process
    assert 0 <= forward['peak_gb'] < train['peak_gb']  # above the built model


@pytest.mark.slow
def test_gpu_suite_runs_end_to_end_on_the_cpu(tmp_path):
    """The ``gpu`` suite on the CPU at toy sizes, under bf16 autocast: every row gets every
    figure, and the ratios are printed, so the script works before a GPU session spends its
    minutes on it. Peak memory is CUDA's, so not measured here."""
    out = tmp_path / 'suite.json'
    result = subprocess.run(
        [sys.executable, 'tools/analysis/benchmark.py', 'gpu', '--device', 'cpu', '--cls-size',
         '64', '64', '--train-batch', '2', '--infer-batch', '2', '--det-size', '64', '96',
         '--det-batch', '1', '--rounds', '1', '--iters', '1', '--amp', 'bf16', '--json', str(out)],
        capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads(out.read_text())['results']
    assert set(rows) == {'tnt_mm TNT-S [reference]', 'tnt_mm TNT-S [cpu]', 'timm TNT-S',
                         'timm DeiT-S'}
    for name, figures in rows.items():
        assert set(figures) == {'train img/s @64x64', 'infer img/s @64x64',
                                'fwd+bwd s @64x96'}, name
        assert all(value > 0 for value in figures.values()), name
    assert 'tnt_mm TNT-S [cpu] / timm DeiT-S: train img/s @64x64' in result.stdout


def test_gpu_suite_runs_only_the_phases_and_compiled_models_asked_for(tmp_path):
    """``--phases`` runs part of the suite (a GPU session's minutes go to what is asked) and
    ``--compile MODEL`` adds only the named compiled rows; a bare ``--compile`` all three."""
    benchmark = load_benchmark()
    assert benchmark.suite_rows(['triton'], ['tnt_mm']) == [
        'tnt_mm TNT-S [triton]', 'timm TNT-S', 'timm DeiT-S', 'tnt_mm TNT-S [triton] compiled']
    assert benchmark.suite_rows(['triton'], None)[-1] == 'timm DeiT-S'
    assert len(benchmark.suite_rows(['reference', 'triton'], list(benchmark.COMPILABLE))) == 8
    assert 'tnt_mm TNT-S [cpu] compiled' not in benchmark.suite_rows(['cpu'], ['tnt_mm'])
    assert benchmark.suite_rows(['triton-fused'], ['tnt_mm'])[0] == 'tnt_mm TNT-S [triton, fused]'
    out = tmp_path / 'suite.json'
    result = subprocess.run(
        [sys.executable, 'tools/analysis/benchmark.py', 'gpu', '--device', 'cpu',
         '--infer-batch', '1', '--rounds', '1', '--iters', '1', '--phases', 'infer',
         '--backends', 'reference', '--json', str(out)],
        capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads(out.read_text())['results']
    assert set(rows) == {'tnt_mm TNT-S [reference]', 'timm TNT-S', 'timm DeiT-S'}
    assert all(set(figures) == {'infer img/s @224'} for figures in rows.values())
    assert 'training at 224' not in result.stdout


def test_compiled_rows_take_the_compile_mode_and_graph_replays_mark_each_step(monkeypatch):
    """``gpu --compile-mode reduce-overhead``: the compiled rows are built with that mode, and
    each call starts a new CUDA-graph step (else a replay may overwrite outputs still in
    use); rows that are not compiled ignore it."""
    benchmark = load_benchmark()
    compiled, steps = [], []
    monkeypatch.setattr(benchmark.torch, 'compile',
                        lambda fn, **kwargs: compiled.append(kwargs) or fn)
    monkeypatch.setattr(benchmark.torch.compiler, 'cudagraph_mark_step_begin',
                        lambda: steps.append(len(compiled)))
    x = torch.randn(1, 3, 32, 32)
    forward = benchmark.build('timm DeiT-S compiled', (32, 32), 'cpu', 'features',
                              'reduce-overhead')
    assert compiled == [dict(dynamic=False, mode='reduce-overhead')]
    assert forward(x).shape == (1, 5, 384) and forward(x).shape == (1, 5, 384)
    assert steps == [1, 1]
    benchmark.build('timm DeiT-S compiled', (32, 32), 'cpu', 'features')(x)
    benchmark.build('timm DeiT-S', (32, 32), 'cpu', 'features', 'reduce-overhead')(x)
    assert compiled[1:] == [dict(dynamic=False, mode=None)] and steps == [1, 1]
    args = benchmark.parser().parse_args(['gpu', '--compile', 'deit', '--compile-mode',
                                          'reduce-overhead'])
    assert args.compile_mode == 'reduce-overhead'


def test_sub_commands_and_the_default_one(monkeypatch):
    """``cpu``, ``gpu``, ``sweep``, ``detector``, ``profile``; without one, ``gpu`` where torch
    sees a GPU, else ``cpu``; ``profile`` hands its options to step_profile.py."""
    benchmark = load_benchmark()
    called = []
    for name in ('cpu_main', 'gpu_main', 'sweep_main', 'detector_main'):
        monkeypatch.setattr(benchmark, name, lambda args, n=name: called.append((n, args)))
    monkeypatch.setattr(benchmark, 'profile_main', lambda argv: called.append(('profile', argv)))
    benchmark.main(['--rounds', '2'])
    assert called[-1][0] == 'cpu_main' and called[-1][1].rounds == 2
    monkeypatch.setattr(benchmark.torch.cuda, 'is_available', lambda: True)
    benchmark.main(['--amp', 'bf16', '--device', 'cpu'])
    assert called[-1][0] == 'gpu_main' and called[-1][1].amp == 'bf16'
    benchmark.main(['sweep', '--sizes', '32', '32', '--device', 'cpu'])
    assert called[-1][0] == 'sweep_main' and called[-1][1].sizes == [[32, 32]]
    benchmark.main(['profile', '--phases', 'infer'])
    assert called[-1] == ('profile', ['--phases', 'infer'])
    with pytest.raises(SystemExit):
        benchmark.main(['gpu', '--backends', 'cuda', '--device', 'cpu'])


@pytest.mark.slow
def test_size_sweep_writes_the_plot_and_its_numbers(tmp_path):
    """``sweep`` at two toy sizes: the three models timed and measured in their own
    processes, a table line per size, the JSON and the plot."""
    plot = str(tmp_path / 'sweep.png')
    result = subprocess.run(
        [sys.executable, 'tools/analysis/benchmark.py', 'sweep', '--rounds', '1',
         '--sizes', '32', '32', '--sizes', '48', '64', '--plot', plot],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert '48x64: tnt_mm TNT-S' in result.stdout and 'ratios tnt_mm / DeiT-S' in result.stdout
    record = json.load(open(osp.join(tmp_path, 'sweep.json')))
    assert record['sizes'] == [[32, 32], [48, 64]]
    for values in record['results'].values():
        assert len(values['seconds']) == 2 and all(s > 0 for s in values['seconds'])
        assert all(0 < gb < 50 for gb in values['peak_gb'])
    from PIL import Image
    assert Image.open(plot).size[0] >= 800
