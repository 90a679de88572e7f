"""FeaturePool (tnt_mm/models/necks/feature_pool.py): the 2x2 average pool that brings TNT's
stride-16 features to DETR's stride 32, in ceil mode, before an optional neck."""
import torch
import torch.nn.functional as F

from tnt_mm.models.necks import FeaturePool


def test_pools_each_map_by_two_keeping_a_partial_last_row_and_column():
    pool = FeaturePool()
    feats = (torch.randn(2, 8, 6, 8), torch.randn(2, 8, 5, 7))  # odd: a padded image's patches
    out = pool(feats)
    assert len(out) == len(feats)
    assert [tuple(o.shape) for o in out] == [(2, 8, 3, 4), (2, 8, 3, 4)]
    # a window over the last, partial row and column averages the values it covers
    assert torch.allclose(out[1][..., -1, -1], feats[1][..., 4, 6])
    assert torch.allclose(out[0], F.avg_pool2d(feats[0], 2))


def test_the_neck_after_it_gets_the_pooled_maps():
    pool = FeaturePool(kernel_size=2, neck=dict(
        type='mmdet.ChannelMapper', in_channels=[8], out_channels=4, kernel_size=1,
        act_cfg=None, norm_cfg=None, num_outs=1))
    x = torch.randn(1, 8, 10, 12)
    (out,) = pool((x,))
    expected = pool.neck((F.avg_pool2d(x, 2),))[0]
    assert out.shape == (1, 4, 5, 6) and torch.allclose(out, expected)
