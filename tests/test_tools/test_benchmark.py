"""tools/analysis/benchmark.py: the interleaved timing that every figure of its table uses."""
import importlib.util
import os.path as osp
import time

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
    # one warm-up round, then three timed ones, always A, B, A, B: drifts hit both alike
    assert calls == ['slow', 'fast'] * 4
    assert medians['fast'] < 0.02
    assert medians['slow'] >= 0.002
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(':')[0] for line in printed] == ['toy slow', 'toy fast']
    assert len(printed[1].split(':')[1].split()) == 3 + 1  # three times and the unit
