"""Trans2SegHead: any class count and input size, gradients everywhere, clear errors."""
import pytest
import torch

from tnt_mm.models.decode_heads import Trans2SegHead

SMALL = dict(in_channels=(24, 40), channels=16, embed_dims=32, num_layers=2, num_heads=4,
             pos_grid=(4, 4))


def inputs(batch, grid, low_channels=24, high_channels=40):
    """Stride-4 and stride-16 maps for a stride-16 grid (the stride-4 map is 4x larger)."""
    height, width = grid
    return [torch.randn(batch, low_channels, 4 * height, 4 * width),
            torch.randn(batch, high_channels, height, width)]


@pytest.mark.parametrize('num_classes', [2, 7, 150])
@pytest.mark.parametrize('grid', [(4, 4), (7, 9), (3, 13)])  # the learnt grid, odd, elongated
def test_one_map_per_class_at_stride_4(num_classes, grid):
    head = Trans2SegHead(num_classes=num_classes, **SMALL).eval()
    low, high = inputs(2, grid)
    with torch.no_grad():
        out = head([low, high])
    assert out.shape == (2, num_classes, *low.shape[2:])
    assert torch.isfinite(out).all()


def test_in_index_picks_the_levels():
    """A four-level pyramid read at levels 0 (stride 4) and 2 (stride 16)."""
    head = Trans2SegHead(num_classes=3, in_index=(0, 2), **SMALL).eval()
    low, high = inputs(1, (5, 6))
    pyramid = [low, torch.randn(1, 8, 10, 12), high, torch.randn(1, 8, 3, 3)]
    with torch.no_grad():
        assert head(pyramid).shape == (1, 3, 20, 24)


def test_binary_output_has_one_query():
    head = Trans2SegHead(num_classes=2, out_channels=1, threshold=0.5,
                         loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=True), **SMALL)
    assert head.class_embed.shape[1] == 1
    with torch.no_grad():
        assert head.eval()(inputs(1, (3, 5))).shape == (1, 1, 12, 20)


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    head = Trans2SegHead(num_classes=5, dropout_ratio=0.0, **SMALL).train()
    out = head(inputs(2, (5, 7)))
    (out * torch.randn_like(out)).sum().backward()
    missing = [name for name, p in head.named_parameters()
               if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
    assert not hasattr(head, 'conv_seg')  # the base class's classifier would get none


def test_position_embedding_follows_the_grid():
    head = Trans2SegHead(num_classes=3, **SMALL).eval()
    assert head.pos_embed.shape == (1, 16, 32)
    # at the learnt grid the embedding is used as it is; elsewhere it is resampled, not cropped
    low, high = inputs(1, (4, 4))
    with torch.no_grad():
        feat, maps = head.forward_transformer(high)
        expected = head.input_proj(high.flatten(2).transpose(1, 2)) + head.pos_embed
        for layer in head.encoder:
            expected = layer(expected)
        expected = head.encoder_norm(expected).transpose(1, 2).reshape(1, 32, 4, 4)
    assert torch.allclose(feat, expected, atol=1e-6)
    assert len(maps) == 2 and maps[-1].shape == (1, 3, 4, 4, 4)  # (B, K, heads, H, W)


def test_loss_and_predict_through_mmseg():
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    head = Trans2SegHead(num_classes=4, **SMALL)
    low, high = inputs(2, (4, 5))
    samples = []
    for _ in range(2):
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 4, (1, 64, 80)))
        samples.append(sample)
    losses = head.loss([low, high], samples, train_cfg={})
    assert torch.isfinite(losses['loss_ce']) and 'acc_seg' in losses
    metas = [dict(img_shape=(61, 77), pad_shape=(64, 80))] * 2
    with torch.no_grad():
        logits = head.eval().predict([low, high], metas, test_cfg={})
    assert logits.shape[:2] == (2, 4)


@pytest.mark.parametrize('change,message', [
    (dict(embed_dims=30, num_heads=4), 'embed_dims=30 is not divisible by num_heads=4'),
    (dict(num_layers=0), 'num_layers=0 must be a positive int'),
    (dict(num_heads=0), 'num_heads=0 must be a positive int'),
    (dict(channels=-1), 'channels=-1 must be a positive int'),
    (dict(mlp_ratio=0), 'mlp_ratio=0 must be positive'),
    (dict(in_index=(0, 1, 2)), 'in_index for two inputs'),
    (dict(in_channels=(24,)), 'in_channels for two inputs'),
    (dict(input_transform='resize_concat'), "input_transform must be 'multiple_select'"),
    (dict(pos_grid=(0, 4)), 'pos_grid=(0, 4)'),
])
def test_impossible_settings_are_refused(change, message):
    with pytest.raises(ValueError, match=message.replace('(', r'\(').replace(')', r'\)')):
        Trans2SegHead(num_classes=3, **{**SMALL, **change})
