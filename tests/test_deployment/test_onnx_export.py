"""ONNX export (tnt_mm/deployment, tools/deployment/pytorch2onnx.py): the exported files run in
ONNX Runtime and match PyTorch at the export size and, when dynamic, at other sizes, including
sizes that are not multiples of the patch size and the position embedding's own grid."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
from helpers import load_tool, randomise_

from tnt_mm.deployment import build_from_config, export_onnx, verify_onnx
from tnt_mm.deployment.onnx_export import BackbonePath, ExportableAdaptiveAvgPool2d
from tnt_mm.models import TNT

TOOL = 'tools/deployment/pytorch2onnx.py'
TINY = dict(inner_dim=12, inner_heads=2, outer_dim=96, outer_heads=2, depth=4)


def run_onnx(path: str, inputs: torch.Tensor):
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    return session.run(None, {'inputs': inputs.numpy()})


def test_backbone_dynamic_export_is_right_at_every_size(tmp_path):
    """One dynamic file, sizes with and without padding, odd patch grids (the stride-32 level
    pools them with ceil_mode) and the pretrain grid (no resampling in PyTorch)."""
    backbone = randomise_(TNT(TINY, pretrain_img_size=64, out_type='pyramid')).eval()
    module = BackbonePath(backbone).eval()
    path = str(tmp_path / 'tnt.onnx')
    export_onnx(module, path, 96, 128, dynamic=True)
    results = verify_onnx(path, module, [(1, 96, 128), (2, 64, 64), (1, 70, 100), (3, 33, 49),
                                         (1, 144, 80)])
    for result in results:
        assert result['max_diff'] < 1e-4, result
    # the grid of a 70x100 input is 5x7: the pyramid levels are 20x28, 10x14, 5x7, 3x4
    outputs = run_onnx(path, torch.randn(1, 3, 70, 100))
    assert [o.shape[-2:] for o in outputs] == [(20, 28), (10, 14), (5, 7), (3, 4)]


def test_static_export_keeps_its_size(tmp_path):
    module = BackbonePath(TNT(TINY, out_type='featmap', out_indices=(1, 3))).eval()
    path = str(tmp_path / 'static.onnx')
    export_onnx(module, path, 64, 80)
    graph = onnx.load(path).graph
    dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 64, 80]
    with pytest.raises(Exception, match='dimension|Got invalid'):
        run_onnx(path, torch.randn(1, 3, 96, 80))


@pytest.mark.parametrize('output_size', [1, 2, 3, 6, (2, 5), (None, 3)])
def test_exportable_adaptive_pool_equals_pytorch(output_size):
    reference = nn.AdaptiveAvgPool2d(output_size)
    replaced = ExportableAdaptiveAvgPool2d(output_size)
    for shape in [(1, 1), (2, 3), (5, 7), (13, 6), (40, 17)]:
        x = torch.randn(2, 4, *shape)
        torch.testing.assert_close(replaced(x), reference(x), atol=1e-6, rtol=1e-6)


def test_adaptive_pool_exports_for_every_size(tmp_path):
    """What the replacement is for: torch's own export of AdaptiveAvgPool2d is fixed to the
    traced size (mmseg's PPM would give wrong UperNet logits at other sizes)."""
    class Pools(nn.Module):
        output_names = ['p3', 'p6']

        def __init__(self) -> None:
            super().__init__()
            self.p3, self.p6 = nn.AdaptiveAvgPool2d(3), nn.AdaptiveAvgPool2d(6)

        def forward(self, inputs):
            return self.p3(inputs), self.p6(inputs)

    module = Pools().eval()
    path = str(tmp_path / 'pools.onnx')
    export_onnx(module, path, 40, 48, dynamic=True)
    assert not any(isinstance(m, ExportableAdaptiveAvgPool2d) for m in module.modules()), \
        'export must not change the module it is given'
    for result in verify_onnx(path, module, [(1, 40, 48), (2, 57, 35), (1, 33, 90)]):
        assert result['max_diff'] < 1e-5, result


@pytest.mark.slow
@pytest.mark.parametrize('config, part, shape, outputs', [
    ('configs/demo/cls_shapes.py', 'all', (64, 64), ['logits']),
    ('configs/demo/det_shapes.py', 'model', (96, 128),
     [f'{kind}_{i}' for kind in ('fpn', 'rpn_cls', 'rpn_bbox') for i in range(5)]),
    ('configs/demo/seg_shapes_upernet.py', 'model', (64, 80), ['seg_logits']),
    ('configs/demo/det_shapes.py', 'backbone', (96, 128),
     ['stride4', 'stride8', 'stride16', 'stride32']),
])
def test_tool_exports_and_verifies_at_two_sizes(tmp_path, capsys, config, part, shape, outputs):
    out = str(tmp_path / 'model.onnx')
    load_tool(TOOL).main([config, '--shape', *map(str, shape), '--out', out, '--part', part,
                          '--dynamic', '--verify'])
    text = capsys.readouterr().out
    assert f'outputs: {", ".join(outputs)}' in text
    verified = [line for line in text.splitlines() if line.startswith('verify ')]
    assert len(verified) == 2 and all(line.endswith('ok atol 0.0001') for line in verified), text
    assert [o.name for o in onnx.load(out).graph.output] == outputs
    # the fused CPU kernels never enter the graph: every node is a standard ONNX operator
    assert {node.domain for node in onnx.load(out).graph.node} <= {'', 'ai.onnx'}


@pytest.mark.slow
def test_tool_loads_the_checkpoint_and_fails_above_atol(tmp_path, capsys):
    """The exported weights are the checkpoint's (compared with a model built independently),
    and --verify exits non-zero when the difference is above --atol."""
    config = 'configs/demo/cls_shapes.py'
    model, _ = build_from_config(config)
    randomise_(model, seed=3)
    checkpoint = str(tmp_path / 'cls.pth')
    torch.save({'state_dict': model.model.state_dict()}, checkpoint)
    out = str(tmp_path / 'cls.onnx')
    tool = load_tool(TOOL)
    with pytest.raises(SystemExit) as exit_info:
        from tnt_mm.utils.cli import run_cli
        run_cli(tool.main, [config, checkpoint, '--shape', '64', '--out', out, '--verify',
                            '--atol', '0'])
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    assert 'ABOVE atol 0' in captured.out and 'differs from PyTorch' in captured.err
    inputs = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(inputs).numpy()
    np.testing.assert_allclose(run_onnx(out, inputs)[0], expected, atol=1e-4)
    assert np.abs(expected).max() > 1e-2  # the randomised weights give non-trivial logits


def test_unsupported_model_and_bad_sizes_get_clear_errors(tmp_path):
    from tnt_mm.deployment import ExportError, export_module
    from tnt_mm.utils.cli import UsageError
    tool = load_tool(TOOL)
    with pytest.raises(UsageError, match='DETR has no tensor path.*--part all'):
        tool.main(['configs/detr_tnt_s.py', '--shape', '64', '--part', 'model',
                   '--out', str(tmp_path / 'd.onnx')])
    with pytest.raises(UsageError, match='batch 2: a whole detector is exported for one image'):
        tool.main(['configs/demo/det_shapes.py', '--shape', '64', '--batch', '2',
                   '--out', str(tmp_path / 'd.onnx')])
    classifier = str(tmp_path / 'c.pth')
    torch.save({'state_dict': build_from_config('configs/demo/cls_shapes.py')[0].model
                .state_dict()}, classifier)
    with pytest.raises(UsageError, match='--images compares detections: it needs a detector'):
        tool.main(['configs/demo/cls_shapes.py', classifier, '--shape', '64',
                   '--verify', '--images', 'configs/demo/cls_shapes.py',
                   '--out', str(tmp_path / 'c.onnx')])
    with pytest.raises(UsageError, match='height 20 is out of range: 33..8192 with dynamic'):
        tool.main(['configs/demo/cls_shapes.py', '--shape', '20', '64', '--dynamic',
                   '--out', str(tmp_path / 'c.onnx')])
    with pytest.raises(ExportError, match="part='neck' is not one of"):
        export_module(nn.Linear(1, 1), 'mmdet', 'neck')
    with pytest.raises(SystemExit):
        tool.parse_args(['configs/demo/cls_shapes.py', '--shape', '64', '--out', 'x.pt'])
    with pytest.raises(SystemExit):  # --images compares a checkpoint's detections
        tool.parse_args(['configs/demo/det_shapes.py', '--shape', '64', '--out', 'x.onnx',
                         '--verify', '--images', 'a.png'])
