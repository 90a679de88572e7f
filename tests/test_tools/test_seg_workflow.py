"""The segmentation demo at toy scale: ADE20K-layout data -> tools/train.py (Trans2Seg) ->
safe checkpoint -> tools/test.py gives mIoU and writes coloured predictions."""
import glob
import os.path as osp

import pytest
import torch
from helpers import load_tool

make_shapes = load_tool('tools/data/make_shapes.py')
train = load_tool('tools/train.py')
test = load_tool('tools/test.py')

pytestmark = pytest.mark.slow  # trains through tools/train.py

# the demo's 64x85 images, four iterations (two of warm-up), no worker processes
TOY = ['train_cfg.max_iters=4', 'train_cfg.val_interval=4', 'train_dataloader.batch_size=2',
       'train_dataloader.num_workers=0', 'val_dataloader.num_workers=0',
       'test_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
       'val_dataloader.persistent_workers=False', 'test_dataloader.persistent_workers=False',
       'default_hooks.checkpoint.interval=4', 'param_scheduler.0.end=2',
       'param_scheduler.1.begin=2', 'param_scheduler.1.end=4']


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp('seg')
    data = str(root / 'shapes_ade')
    make_shapes.main(['ade', data, '--num-train', '6', '--num-val', '3', '--size', '64'])
    options = TOY + [f'{loader}.dataset.data_root={data}'
                     for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    work_dir = str(root / 'work')
    train.main(['configs/demo/seg_shapes.py', '--work-dir', work_dir, '--cfg-options', *options])
    return work_dir, options


def test_checkpoint_loads_with_weights_only(trained):
    work_dir, _ = trained
    checkpoint = torch.load(osp.join(work_dir, 'iter_4.pth'), weights_only=True)
    assert checkpoint['meta']['iter'] == 4
    assert 'decode_head.class_embed' in checkpoint['state_dict']


def test_test_tool_reports_miou_and_draws(trained, tmp_path):
    work_dir, options = trained
    show_dir = str(tmp_path / 'vis')
    metrics = test.main(['configs/demo/seg_shapes.py', osp.join(work_dir, 'iter_4.pth'),
                         '--work-dir', str(tmp_path), '--show-dir', show_dir,
                         '--cfg-options', *options])
    assert {'aAcc', 'mIoU', 'mAcc'} <= set(metrics)
    assert 0.0 <= metrics['mIoU'] <= 100.0
    drawn = glob.glob(osp.join(show_dir, '**', '*.png'), recursive=True)
    assert len(drawn) == 3, drawn  # one coloured prediction per validation image
