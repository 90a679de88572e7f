"""NaN or Inf in the input or in the loss is reported, never trained on silently."""
from types import SimpleNamespace

import pytest
import torch
from helpers import load_tool, toy_cls_options

from tnt_mm.engine import CheckInvalidLossHook
from tnt_mm.models import TNT
from tnt_mm.utils.config import load_config

make_shapes = load_tool('tools/data/make_shapes.py')
train = load_tool('tools/train.py')


def test_hook_names_the_bad_terms():
    runner = SimpleNamespace(iter=6, epoch=2, work_dir='work_dirs/x')
    hook = CheckInvalidLossHook()
    fine = dict(loss=torch.tensor(1.0), loss_cls=torch.tensor(1.0), acc=torch.tensor(0.5))
    hook.after_train_iter(runner, 0, outputs=fine)
    bad = dict(loss=torch.tensor(float('nan')), loss_cls=torch.tensor(float('nan')),
               loss_bbox=torch.tensor(0.3))
    with pytest.raises(FloatingPointError, match=r'non-finite training loss at iteration 7 '
                                                 r'\(epoch 3\): loss=nan, loss_cls=nan\. .*'
                                                 r'Resume from the last checkpoint in '
                                                 r'work_dirs/x'):
        hook.after_train_iter(runner, 0, outputs=bad)


@pytest.mark.slow
def test_nan_loss_stops_training(tmp_path):
    """A NaN loss weight makes the first loss NaN: training stops at iteration 1."""
    data = str(tmp_path / 'shapes')
    make_shapes.main(['imagenet', data, '--num-train', '12', '--num-val', '6', '--size', '16'])
    with pytest.raises(FloatingPointError, match=r'iteration 1 \(epoch 1\): loss=nan\.'):
        train.main(['configs/demo/cls_shapes.py', '--work-dir', str(tmp_path / 'work'),
                    '--cfg-options', *toy_cls_options(data),
                    'model.head.loss.loss_weight=nan'])


def test_non_finite_input_is_reported():
    model = TNT('tiny', out_type='cls_token')
    image = torch.zeros(2, 3, 32, 32)
    image[0, 0, 0, :3] = float('nan')
    image[1, 2, 5, 5] = float('inf')
    with pytest.raises(ValueError, match=r'TNT got 3 NaN and 1 infinite values in its input of '
                                         r'shape \(2, 3, 32, 32\).*zero std'):
        model(image)


def test_zero_std_through_a_classifier():
    """A data preprocessor that divides by a zero std: the classifier's loss is not computed
    on infinite inputs."""
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample
    cfg = load_config('configs/demo/cls_shapes.py')
    cfg.model.data_preprocessor = dict(type='ClsDataPreprocessor', mean=[127.5] * 3,
                                       std=[0.0] * 3, num_classes=6)
    init_default_scope('mmpretrain')
    model = MODELS.build(cfg.model)
    batch = dict(inputs=[torch.full((3, 32, 32), 200, dtype=torch.uint8)],
                 data_samples=[DataSample().set_gt_label(1)])
    data = model.data_preprocessor(batch, True)
    with pytest.raises(ValueError, match=r'0 NaN and 3072 infinite values'):
        model(**data, mode='loss')


def test_non_finite_input_is_reported_one_step_later_where_the_check_would_wait(monkeypatch):
    """On a GPU the test's result is read at the next training step, without a host sync; the
    CPU stands in for it here."""
    from tnt_mm.models.backbones import tnt as tnt_module
    monkeypatch.setattr(tnt_module, 'defers_input_check', lambda device: True)
    model = TNT('tiny', out_type='cls_token').train()
    good = torch.zeros(1, 3, 32, 32)
    bad = good.clone()
    bad[0, 1, 2, 3] = float('-inf')
    model(good)
    model(good)  # a finite input, read at the next step: nothing to report
    model(bad)  # the bad step itself runs on
    with pytest.raises(ValueError, match=r'NaN or infinite values in its input of shape '
                                         r'\(1, 3, 32, 32\) at the previous training step'):
        model(good)
    model(good)  # reported once
    model.eval()(bad)  # inference is not checked
