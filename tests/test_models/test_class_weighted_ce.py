"""tnt_mm.ClassWeightedCrossEntropyLoss: mmseg's class-weighted mean where mmseg can compute it,
and the same mean where mmseg 1.2.2 fails (ignored pixels)."""
import pytest
import torch

from tnt_mm.models import ClassWeightedCrossEntropyLoss

WEIGHTS = [0.1, 1.0, 2.0]


def inputs(seed=0, ignored=True):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 3, 5, 6, generator=gen)
    label = torch.randint(0, 3, (2, 5, 6), generator=gen)
    if ignored:
        label[:, :2] = 255
    return logits, label


def test_equals_mmseg_without_ignored_pixels():
    from mmseg.models.losses import CrossEntropyLoss
    logits, label = inputs(ignored=False)
    ours = ClassWeightedCrossEntropyLoss(WEIGHTS, loss_weight=0.4)(logits, label)
    mmseg = CrossEntropyLoss(class_weight=WEIGHTS, loss_weight=0.4, avg_non_ignore=True)(
        logits, label)
    torch.testing.assert_close(ours, mmseg)


def test_ignored_pixels_are_left_out_where_mmseg_fails():
    from mmseg.models.losses import CrossEntropyLoss
    logits, label = inputs()
    with pytest.raises(IndexError):  # the bug this loss exists for
        CrossEntropyLoss(class_weight=WEIGHTS, avg_non_ignore=True)(logits, label)
    loss = ClassWeightedCrossEntropyLoss(WEIGHTS)(logits, label)
    kept = label != 255
    per_pixel = torch.nn.functional.cross_entropy(logits, label.clamp(max=2), reduction='none')
    weights = torch.tensor(WEIGHTS)[label.clamp(max=2)] * kept
    torch.testing.assert_close(loss, (per_pixel * weights).sum() / weights.sum())
    # a per-pixel weight of one changes nothing
    torch.testing.assert_close(
        ClassWeightedCrossEntropyLoss(WEIGHTS)(logits, label, weight=torch.ones(2, 5, 6)), loss)


def test_bad_settings():
    with pytest.raises(ValueError, match='one non-negative weight per class'):
        ClassWeightedCrossEntropyLoss([0.1, -1.0])
    logits, label = inputs()
    with pytest.raises(ValueError, match='3 classes in the logits but 2 class weights'):
        ClassWeightedCrossEntropyLoss([1.0, 1.0])(logits, label)
