"""The segmentation demo at toy scale: ADE20K-layout data -> tools/train.py (Trans2Seg) ->
safe checkpoint -> tools/test.py gives mIoU with and without the background and writes coloured
predictions -> tools/demo/segment_images.py draws the summary picture; and the UperNet demo's
recipe on a small set learns the background."""
import glob
import os.path as osp

import numpy as np

import pytest
import torch
from helpers import load_tool
from PIL import Image

make_shapes = load_tool('tools/data/make_shapes.py')
train = load_tool('tools/train.py')
test = load_tool('tools/test.py')
segment_images = load_tool('tools/demo/segment_images.py')

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
    assert {'aAcc', 'mIoU', 'mAcc', 'mIoU_without_background'} <= set(metrics)
    assert 0.0 <= metrics['mIoU'] <= 100.0
    assert 0.0 <= metrics['mIoU_without_background'] <= 100.0
    drawn = glob.glob(osp.join(show_dir, '**', '*.png'), recursive=True)
    assert len(drawn) == 3, drawn  # one coloured prediction per validation image


def test_summary_picture_shows_image_truth_and_prediction(trained, tmp_path):
    work_dir, options = trained
    data = options[-1].split('=', 1)[1]
    images = sorted(glob.glob(osp.join(data, 'images', 'validation', '*.jpg')))
    out = str(tmp_path / 'summary.png')
    predictions = segment_images.main(['configs/demo/seg_shapes.py',
                                       osp.join(work_dir, 'iter_4.pth'), *images, '--out', out])
    assert len(predictions) == 3 and predictions[0].shape == (64, 85)
    picture = Image.open(out)
    # 64x85 label maps enlarged 4x to 256x340: image, truth and prediction side by side, two
    # tiles per row
    assert picture.width >= 2 * 3 * 340 and picture.height >= 2 * 256
    assert not osp.exists(out + '.partial.png')
    assert segment_images.ground_truth_path(images[0]).endswith(
        osp.join('annotations', 'validation', osp.basename(images[0])[:-4] + '.png'))


def test_upernet_recipe_learns_the_background(tmp_path):
    """The demo's UperNet recipe, 60 iterations on 48 images: most background pixels of the
    validation images are predicted as background (class 0), which a model that ignores the
    background (the old demo) never learns."""
    data = str(tmp_path / 'shapes_ade')
    make_shapes.main(['ade', data, '--num-train', '48', '--num-val', '4', '--size', '64',
                      '--seed', '1'])
    options = [
        'train_cfg.max_iters=60', 'train_cfg.val_interval=60', 'train_dataloader.batch_size=8',
        'train_dataloader.num_workers=0', 'val_dataloader.num_workers=0',
        'test_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
        'val_dataloader.persistent_workers=False', 'test_dataloader.persistent_workers=False',
        'default_hooks.checkpoint.interval=60', 'param_scheduler.0.end=10',
        'param_scheduler.1.begin=10', 'param_scheduler.1.end=60', 'optim_wrapper.optimizer.lr=1e-3',
        *[f'{loader}.dataset.data_root={data}'
          for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]]
    config = 'configs/demo/seg_shapes_upernet.py'
    work_dir = str(tmp_path / 'work')
    train.main([config, '--work-dir', work_dir, '--cfg-options', *options])
    images = sorted(glob.glob(osp.join(data, 'images', 'validation', '*.jpg')))
    predictions = segment_images.main([config, osp.join(work_dir, 'iter_60.pth'), *images,
                                       '--out', str(tmp_path / 'summary.png')])
    truth = np.stack([np.asarray(Image.open(segment_images.ground_truth_path(p)))
                      for p in images])
    predicted = np.stack(predictions)
    background = truth == 0
    recall = (predicted[background] == 0).mean()
    assert recall > 0.5, f'{recall:.2f} of the background pixels predicted as background'
