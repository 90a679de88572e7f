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
