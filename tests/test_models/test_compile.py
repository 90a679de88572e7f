"""torch.compile of the backbone, alone and under a detector's FPN, across changing input sizes
(detection feeds a new size almost every batch): no crash, outputs equal to eager."""
import pytest
import torch

from tnt_mm.models import TNT

ARCH = dict(inner_dim=12, inner_heads=2, outer_dim=96, outer_heads=2, depth=4)


@pytest.mark.slow
def test_compiled_backbone_follows_changing_sizes():
    torch.manual_seed(0)
    model = TNT(ARCH, out_type='pyramid').eval()
    compiled = torch.compile(model)
    # the second size makes Dynamo recompile with dynamic sizes; the third reuses that graph;
    # 100x150 is not a multiple of the patch size (padding)
    for size in [(64, 96), (80, 112), (100, 150)]:
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            got, want = compiled(x), model(x)
        assert [o.shape for o in got] == [o.shape for o in want]
        for a, b in zip(got, want):
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), size


@pytest.mark.slow
def test_compiled_detector_features_follow_changing_sizes():
    """The detection demo's backbone + FPN (``extract_feat``) compiled and fed batches of three
    image sizes, as a detector's data loader does."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope, MODELS
    cfg = Config.fromfile('configs/demo/det_shapes.py')
    with DefaultScope.overwrite_default_scope('mmdet'):
        detector = MODELS.build(cfg.model).eval()
    compiled = torch.compile(detector.extract_feat)
    for size in [(96, 128), (112, 128), (96, 160)]:
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            got, want = compiled(x), detector.extract_feat(x)
        for a, b in zip(got, want):
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), size
