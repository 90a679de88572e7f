"""torch.compile of the backbone, alone, under a detector's FPN and in a classifier, across
changing input sizes (detection feeds a new size almost every batch), and mmengine's
``compile=True`` training: no crash, results equal to eager."""
import pytest
import torch

from tnt_mm.models import TNT

# Two blocks: what these tests check does not grow with the depth, Inductor's compile time does
ARCH = dict(inner_dim=12, inner_heads=2, outer_dim=96, outer_heads=2, depth=2)


@pytest.mark.slow
def test_compiled_backbone_follows_changing_sizes():
    """The backbone's block features (the pyramid on top: the next test's detector) at three
    sizes, one of them padded to whole patches."""
    torch.manual_seed(0)
    model = TNT(ARCH, out_type='featmap', out_indices=(0, 1)).eval()
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


@pytest.mark.slow
def test_compiled_classifier_follows_changing_sizes():
    """The classification demo's ImageClassifier (backbone, neck, head: ``mode='tensor'``)
    traced by Dynamo and AOTAutograd and fed three image sizes: logits equal to eager.
    (Inductor's code for the backbone is the first test's; the neck and head add pooling and a
    Linear, which would only add its compile time.)"""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope, MODELS
    cfg = Config.fromfile('configs/demo/cls_shapes.py')
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        classifier = MODELS.build(cfg.model).eval()
    compiled = torch.compile(classifier, backend='aot_eager')
    for size in [(32, 32), (48, 32), (64, 80)]:
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            got, want = compiled(x, mode='tensor'), classifier(x, mode='tensor')
        assert got.shape == (2, cfg.model.head.num_classes)
        assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), size


@pytest.mark.slow
def test_mmengine_compile_true_trains_as_eager(toy_cls_data, tmp_path):
    """``compile=True`` (mmengine compiles the whole train_step, the optimizer step included)
    trains the classification demo: PlainParamGroupsHook hands Dynamo plain-dict parameter
    groups. The compiled run ends with the eager run's weights (same seed, 4 AdamW steps)."""
    import os.path as osp

    from helpers import load_tool, toy_cls_options
    train = load_tool('tools/train.py')
    weights = {}
    for compiled in (False, True):
        work_dir = str(tmp_path / f'compile_{compiled}')
        train.main(['configs/demo/cls_shapes.py', '--work-dir', work_dir, '--cfg-options',
                    *toy_cls_options(toy_cls_data), f'compile={compiled}'])
        weights[compiled] = torch.load(osp.join(work_dir, 'epoch_2.pth'),
                                       weights_only=True)['state_dict']
    for name, value in weights[False].items():
        assert torch.allclose(weights[True][name], value, atol=1e-4, rtol=1e-3), name


def test_dynamo_still_rejects_dict_subclass_param_groups():
    """The PyTorch limitation PlainParamGroupsHook works around, as its minimal reproduction:
    compiling an optimizer step whose parameter group is a dict subclass (mmengine's
    ConfigDict, or any) stops inside Dynamo. When this test fails, PyTorch has fixed it and the
    hook can go."""
    class Group(dict):
        pass

    param = torch.nn.Parameter(torch.randn(3))
    param.grad = torch.ones(3)
    optimizer = torch.optim.AdamW([Group(params=[param], lr=0.1)])
    torch._dynamo.reset()
    with pytest.raises(torch._dynamo.exc.InternalTorchDynamoError,
                       match="'UserDefinedDictVariable' object has no attribute 'items'"):
        torch.compile(optimizer.step)()
    torch._dynamo.reset()
    optimizer.param_groups[:] = [dict(g) for g in optimizer.param_groups]  # what the hook does
    before = param.detach().clone()
    torch.compile(optimizer.step)()
    assert not torch.equal(param.detach(), before)
