"""A run killed after a checkpoint resumes with --resume and ends where an uninterrupted run
ends: same iterations, learning rates, optimizer state and final weights, bit for bit."""
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import assert_same_state, toy_cls_options


pytestmark = pytest.mark.slow  # trains through tools/train.py
CONFIG = 'configs/demo/cls_shapes.py'
MAX_EPOCHS = 4
# deterministic kernels, one thread (the same reduction order in every process)
ENV = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')


def train_command(work_dir, data, *extra):
    return [sys.executable, 'tools/train.py', CONFIG, '--work-dir', work_dir, *extra,
            '--cfg-options', *toy_cls_options(data, MAX_EPOCHS),
            'randomness.seed=0', 'randomness.deterministic=True']


def last_checkpoint(work_dir):
    path = osp.join(work_dir, 'last_checkpoint')
    if not osp.exists(path):
        return None
    with open(path) as f:
        return f.read().strip() or None


def load(work_dir, epoch):
    return torch.load(osp.join(work_dir, f'epoch_{epoch}.pth'), weights_only=True)


def test_killed_run_resumes_to_the_same_weights(toy_cls_data, tmp_path):
    data = toy_cls_data
    full, cut = str(tmp_path / 'full'), str(tmp_path / 'cut')
    # the uninterrupted run, alongside the one that gets killed
    reference = subprocess.Popen(train_command(full, data), env=ENV, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen(train_command(cut, data), env=ENV, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while last_checkpoint(cut) is None and victim.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)  # dies as at hour 20: no clean-up, no final checkpoint
    assert victim.wait() == -signal.SIGKILL
    _, reference_err = reference.communicate(timeout=300)
    assert reference.returncode == 0, reference_err[-3000:]
    stopped_at = last_checkpoint(cut)
    assert stopped_at is not None and not osp.exists(osp.join(cut, f'epoch_{MAX_EPOCHS}.pth'))
    stopped_epoch = int(osp.basename(stopped_at)[len('epoch_'):-len('.pth')])

    resumed = subprocess.run(train_command(cut, data, '--resume'), env=ENV, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    assert f'resumed epoch: {stopped_epoch}, iter: {2 * stopped_epoch}' in log  # 2 iters/epoch
    assert 'restored the random generator states' in log
    # every checkpoint written after the resumption matches the uninterrupted run's
    for epoch in range(stopped_epoch + 1, MAX_EPOCHS + 1):
        assert_same_state(load(cut, epoch), load(full, epoch), f'epoch {epoch}')
