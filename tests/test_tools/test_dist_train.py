"""Two training processes on the CPU (torchrun, gloo) through tools/dist_train.sh, then two
evaluation processes through tools/dist_test.sh."""
import os
import os.path as osp
import socket
import subprocess
import sys

import pytest
import torch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_cpu_training(tmp_path, toy_cls_data):
    data = toy_cls_data
    work_dir = str(tmp_path / 'work')
    options = ['train_cfg.max_epochs=2', 'train_cfg.val_interval=2',
               'param_scheduler.0.end=1', 'param_scheduler.1.begin=1',
               'train_dataloader.batch_size=12', 'train_dataloader.num_workers=0',
               'train_dataloader.persistent_workers=False', 'val_dataloader.num_workers=0',
               'val_dataloader.persistent_workers=False', 'default_hooks.checkpoint.interval=2',
               'model.backbone.pretrain_img_size=32',
               f'train_dataloader.dataset.data_root={data}',
               f'val_dataloader.dataset.data_root={data}',
               f'test_dataloader.dataset.data_root={data}']
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()), OMP_NUM_THREADS='1')
    result = subprocess.run(['bash', 'tools/dist_train.sh', 'configs/demo/cls_shapes.py', '2',
                             '--work-dir', work_dir, '--cfg-options', *options],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoints = sorted(f for f in os.listdir(work_dir) if f.endswith('.pth'))
    assert checkpoints == ['epoch_2.pth']  # one checkpoint, written by rank 0
    meta = torch.load(osp.join(work_dir, 'epoch_2.pth'), weights_only=True)['meta']
    # 24 images, batch 12 per process: 2 iterations per epoch alone, 1 when 2 ranks share them
    assert meta['iter'] == 2
    log = open(next(osp.join(root, f) for root, _, files in os.walk(work_dir)
                    for f in files if f.endswith('.log'))).read()
    assert 'Distributed training: True' in log
    assert 'accuracy/top1' in log

    # Two evaluation processes on the checkpoint (tools/dist_test.sh): the ranks leave through
    # tnt_mm.utils.dist.exit_distributed, which must not lose the output it flushes.
    out = tmp_path / 'results.pkl'
    env['PORT'] = str(free_port())
    result = subprocess.run(
        ['bash', 'tools/dist_test.sh', 'configs/demo/cls_shapes.py',
         osp.join(work_dir, 'epoch_2.pth'), '2', '--work-dir', work_dir, '--out', str(out),
         '--cfg-options', 'model.backbone.pretrain_img_size=32', 'test_dataloader.num_workers=0',
         'test_dataloader.persistent_workers=False', f'test_dataloader.dataset.data_root={data}'],
        capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count('| accuracy/top1 |') == 1  # rank 0 prints the table
    assert out.is_file() and not (tmp_path / 'results.partial.pkl').exists()
