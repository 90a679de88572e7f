"""Preemption (tnt_mm.PreemptionHook, tools/train.py, tools/dist_train.sh, tools/slurm_train.sh):
a run told to stop saves at the iteration the signal arrived and exits 75 within the grace
period; resumed, it continues inside the epoch and ends with the weights of an uninterrupted
run, bit for bit (one process and two); a signal or a kill during the save leaves the previous
checkpoint to resume from; time-based checkpoints keep only the latest."""
import os
import os.path as osp
import random
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest
import torch
from helpers import assert_same_state

from tnt_mm.engine import PREEMPTED_EXIT_CODE, PreemptionHook
from tnt_mm.engine.hooks.preemption_hook import SkipFirstBatches

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = 'configs/demo/cls_shapes.py'
MAX_EPOCHS = 3
BATCH = 4  # 24 images: 6 iterations per epoch in one process, 3 per rank in two
GRACE_S = 30
ENV = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHON=sys.executable,
           PYTHONPATH=osp.join(ROOT, 'tests'))


def options(data, max_epochs=MAX_EPOCHS):
    return [f'train_cfg.max_epochs={max_epochs}', 'train_cfg.val_interval=1',
            'train_dataloader.num_workers=0', 'val_dataloader.num_workers=0',
            'train_dataloader.persistent_workers=False',
            'val_dataloader.persistent_workers=False', f'train_dataloader.batch_size={BATCH}',
            'default_hooks.checkpoint.interval=1', 'default_hooks.checkpoint.max_keep_ckpts=-1',
            'param_scheduler.0.end=1', 'param_scheduler.1.begin=1',
            'model.backbone.pretrain_img_size=32', 'randomness.seed=0',
            # stochastic depth draws from torch's generator in every step: a resumed run whose
            # generator is one draw off ends with other weights
            'model.backbone.drop_path_rate=0.1',
            'randomness.deterministic=True',
            *[f'{split}_dataloader.dataset.data_root={data}' for split in ('train', 'val', 'test')]]


def signal_config(tmp_path, **hook) -> str:
    """The demo config plus tests/signal_hook.py's hook with ``hook``'s arguments."""
    path = tmp_path / 'signalled.py'
    path.write_text(f"_base_ = '{osp.join(ROOT, CONFIG)}'\n"
                    "custom_imports = dict(imports=['tnt_mm', 'signal_hook'], "
                    "allow_failed_imports=False)\n"
                    f"custom_hooks = _base_.custom_hooks + [dict(type='SignalAtIterHook', "
                    f"**{hook!r})]\n")
    return str(path)


def train(config, work_dir, data, *extra, processes=1, port=None):
    if processes == 1:
        command = [sys.executable, 'tools/train.py', config]
        env = ENV
    else:
        command = ['bash', 'tools/dist_train.sh', config, str(processes)]
        env = dict(ENV, PORT=str(port))
    return subprocess.run([*command, '--work-dir', work_dir, *extra, '--cfg-options',
                           *options(data)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def load(path):
    return torch.load(path, weights_only=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def pick_iteration(per_epoch: int) -> int:
    """A random iteration inside an epoch (not its last), printed so a failure can be rerun."""
    choice = random.choice([i for i in range(1, MAX_EPOCHS * per_epoch) if i % per_epoch])
    print(f'signal after iteration {choice}')
    return choice


def assert_same_run(resumed_dir, reference_dir, from_epoch):
    for epoch in range(from_epoch, MAX_EPOCHS + 1):
        assert_same_state(load(osp.join(resumed_dir, f'epoch_{epoch}.pth')),
                          load(osp.join(reference_dir, f'epoch_{epoch}.pth')), f'epoch {epoch}')


@pytest.fixture(scope='module')
def reference_runs(toy_cls_data, tmp_path_factory):
    """Uninterrupted runs: one process, and two through tools/dist_train.sh."""
    runs = {}
    for processes in (1, 2):
        work_dir = str(tmp_path_factory.mktemp(f'reference_{processes}'))
        result = train(CONFIG, work_dir, toy_cls_data, processes=processes, port=free_port())
        assert result.returncode == 0, result.stderr[-3000:]
        runs[processes] = work_dir
    return runs


@pytest.mark.slow
def test_signal_mid_epoch_then_resume_is_exact(toy_cls_data, reference_runs, tmp_path):
    at = pick_iteration(per_epoch=6)
    stamp = str(tmp_path / 'signalled_at')
    work_dir = str(tmp_path / 'work')
    stopped = train(signal_config(tmp_path, at_iter=at, stamp_file=stamp), work_dir,
                    toy_cls_data)
    finished = time.time()
    assert stopped.returncode == PREEMPTED_EXIT_CODE, stopped.stderr[-3000:]
    assert finished - float(open(stamp).read()) < GRACE_S
    saved = osp.join(work_dir, f'preempted_iter_{at}.pth')
    assert open(osp.join(work_dir, 'last_checkpoint')).read() == saved
    assert load(saved)['meta']['iter'] == at
    assert f'resume with: python tools/train.py' in stopped.stderr

    resumed = train(CONFIG, work_dir, toy_cls_data, '--resume')
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    assert f'skipping its first {at % 6} of 6 batches' in log
    assert_same_run(work_dir, reference_runs[1], from_epoch=at // 6 + 1)


@pytest.mark.slow
def test_two_processes_agree_and_resume_exactly(toy_cls_data, reference_runs, tmp_path):
    """Only rank 1 gets the signal (SIGUSR1); both ranks stop after the same iteration."""
    at = pick_iteration(per_epoch=3)
    work_dir = str(tmp_path / 'work')
    stopped = train(signal_config(tmp_path, at_iter=at, rank=1, signal_name='SIGUSR1'),
                    work_dir, toy_cls_data, processes=2, port=free_port())
    # torchrun reports the workers' exit (75) as its own failure
    assert stopped.returncode != 0 and 'SIGUSR1 received' in stopped.stdout + stopped.stderr
    assert load(osp.join(work_dir, f'preempted_iter_{at}.pth'))['meta']['iter'] == at
    resumed = train(CONFIG, work_dir, toy_cls_data, '--resume', processes=2, port=free_port())
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(work_dir, reference_runs[2], from_epoch=at // 3 + 1)


@pytest.mark.slow
def test_signal_or_kill_during_the_save_keeps_the_previous_checkpoint(
        toy_cls_data, reference_runs, tmp_path):
    at = 8  # inside epoch 2, after epoch_1.pth
    # a second SIGTERM while saving is ignored: the save completes
    work_dir = str(tmp_path / 'twice')
    stopped = train(signal_config(tmp_path, at_iter=at, during_save=['SIGTERM']), work_dir,
                    toy_cls_data)
    assert stopped.returncode == PREEMPTED_EXIT_CODE, stopped.stderr[-3000:]
    assert load(osp.join(work_dir, f'preempted_iter_{at}.pth'))['meta']['iter'] == at

    # killed while saving: last_checkpoint still names epoch 1, which resumes exactly
    work_dir = str(tmp_path / 'killed')
    killed = train(signal_config(tmp_path, at_iter=at, during_save=['SIGKILL']), work_dir,
                   toy_cls_data)
    assert killed.returncode == -signal.SIGKILL
    last = open(osp.join(work_dir, 'last_checkpoint')).read().strip()
    assert last == osp.join(work_dir, 'epoch_1.pth')
    assert not osp.exists(osp.join(work_dir, f'preempted_iter_{at}.pth'))
    assert load(last)['meta']['iter'] == 6
    resumed = train(CONFIG, work_dir, toy_cls_data, '--resume')
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(work_dir, reference_runs[1], from_epoch=2)


@pytest.mark.slow
def test_dist_train_forwards_the_signal(toy_cls_data, tmp_path):
    """SIGUSR1 to tools/dist_train.sh reaches the workers through torchrun; they save at one
    iteration, and the script exits 75 well within the grace period."""
    work_dir = str(tmp_path / 'work')
    command = ['bash', 'tools/dist_train.sh', CONFIG, '2', '--work-dir', work_dir,
               '--cfg-options', *options(toy_cls_data, max_epochs=40), 'train_cfg.val_interval=40']
    launcher = subprocess.Popen(command, cwd=ROOT, env=dict(ENV, PORT=str(free_port())),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not osp.exists(osp.join(work_dir, 'epoch_1.pth')) and time.time() < deadline:
        assert launcher.poll() is None, launcher.stdout.read()[-3000:]
        time.sleep(0.05)
    signalled = time.time()
    launcher.send_signal(signal.SIGUSR1)
    output, _ = launcher.communicate(timeout=120)
    assert launcher.returncode == PREEMPTED_EXIT_CODE, output[-3000:]
    assert time.time() - signalled < GRACE_S
    assert 'SIGUSR1 received' in output  # (rank 0's log; the other ranks log to no console)
    saved = open(osp.join(work_dir, 'last_checkpoint')).read()
    iteration = load(saved)['meta']['iter']
    assert saved.endswith(f'preempted_iter_{iteration}.pth') and iteration < 40 * 3


@pytest.mark.slow
def test_time_based_checkpoints_keep_the_latest(toy_cls_data, tmp_path):
    work_dir = str(tmp_path / 'work')
    result = train(CONFIG, work_dir, toy_cls_data, '--save-every-minutes', '0.0001')
    assert result.returncode == 0, result.stderr[-3000:]
    timed = [f for f in os.listdir(work_dir) if f.startswith('timed_iter_')]
    assert timed == [f'timed_iter_{MAX_EPOCHS * 6}.pth']  # one per iteration, older removed
    assert load(osp.join(work_dir, timed[0]))['meta']['iter'] == MAX_EPOCHS * 6


def test_slurm_script_asks_for_the_signal_requeues_and_resumes(tmp_path):
    """tools/slurm_train.sh with stand-ins for srun, scontrol and python that record how they
    were called."""
    bin_dir, log = tmp_path / 'bin', tmp_path / 'calls'
    bin_dir.mkdir()
    scripts = {
        # srun: record its options, then run the task command (from $PYTHON on)
        'srun': 'while [ "$1" != "$PYTHON" ]; do echo "srun $1" >> "$CALLS"; shift; done\n'
                'exec "$@"',
        'scontrol': 'echo "scontrol $*" >> "$CALLS"',
        'fake_python': 'echo "python $*" >> "$CALLS"; exit "$EXIT_WITH"',
    }
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(f'#!/usr/bin/env bash\n{body}\n')
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    work_dir = tmp_path / 'work'
    work_dir.mkdir()

    def run(exit_with, *extra, **env):
        log.write_text('')
        result = subprocess.run(
            ['bash', 'tools/slurm_train.sh', 'gpu', 'tnt', CONFIG, str(work_dir), *extra],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
            env=dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}', CALLS=str(log),
                     PYTHON=str(bin_dir / 'fake_python'), EXIT_WITH=str(exit_with), **env))
        return result, log.read_text().splitlines()

    # first start, preempted inside a batch job: the signal is asked for, the job requeued
    result, calls = run(PREEMPTED_EXIT_CODE, SLURM_JOB_ID='4242')
    assert result.returncode == PREEMPTED_EXIT_CODE, result.stderr
    assert 'srun --signal=USR1@120' in calls
    task = next(c for c in calls if c.startswith('python '))
    assert '--launcher=slurm' in task and '--resume' not in task
    assert calls[-1] == 'scontrol requeue 4242'
    # restarted with a checkpoint in the work dir: resumes, finishes, no requeue
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'preempted_iter_7.pth'))
    result, calls = run(0, SLURM_JOB_ID='4242', SIGNAL_LEAD='300')
    assert result.returncode == 0 and 'resuming from' in result.stderr
    assert 'srun --signal=USR1@300' in calls
    assert next(c for c in calls if c.startswith('python ')).split().count('--resume') == 1
    assert not any(c.startswith('scontrol') for c in calls)
    # --resume given by the user is not doubled; REQUEUE=0 or no batch job: no requeue
    result, calls = run(PREEMPTED_EXIT_CODE, '--resume', SLURM_JOB_ID='4242', REQUEUE='0')
    assert next(c for c in calls if c.startswith('python ')).split().count('--resume') == 1
    assert not any(c.startswith('scontrol') for c in calls)
    assert 'run the same command again' in result.stderr


def test_skip_first_batches_and_bad_arguments():
    batches = [[0, 1], [2, 3], [4, 5], [6]]

    class Sampler(list):
        sampler = 'inner'

    skipped = SkipFirstBatches(Sampler(batches), 3)
    assert list(skipped) == [[6]] and len(skipped) == 1 and skipped.sampler == 'inner'
    assert list(SkipFirstBatches(Sampler(batches), 4)) == [] and len(SkipFirstBatches(batches, 4)) == 0
    with pytest.raises(ValueError, match=r"\['SIGNOPE'\] are not signal names"):
        PreemptionHook(signals=('SIGTERM', 'SIGNOPE'))
    with pytest.raises(ValueError, match='interval_minutes=0 must be positive'):
        PreemptionHook(interval_minutes=0)
