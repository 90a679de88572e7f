"""Detectors exported whole (tnt_mm/deployment/detector_export.py, pytorch2onnx.py --part all)
and run by tools/deployment/onnx_infer.py: their detections are mmdet's ``DetInferencer``'s on
the detection demos' images (same count and labels, boxes within 1 px, scores within 1e-3,
mask IoU >= 0.98), DETR's are mmdet's at two sizes, and onnx_infer runs without torch."""
import json
import os.path as osp
import subprocess
import sys

import cv2
import numpy as np
import onnx
import pytest
import torch
from helpers import load_tool, randomise_
from PIL import Image

from tnt_mm.deployment import build_from_config, export_onnx, read_metadata
from tnt_mm.deployment.compare import agrees, match_detections

EXPORT = 'tools/deployment/pytorch2onnx.py'
INFER = 'tools/deployment/onnx_infer.py'
NUM_IMAGES = 8
# run onnx_infer.py with these modules made unimportable: it must need none of them
NOT_NEEDED = ('torch', 'torchvision', 'mmdet', 'mmcv', 'mmengine', 'tnt_mm', 'cv2')


@pytest.fixture(scope='module')
def shapes_val(tmp_path_factory) -> list:
    """Validation images of the detection demos' generated shapes (128 x 96, as trained)."""
    root = str(tmp_path_factory.mktemp('shapes') / 'coco')
    load_tool('tools/data/make_shapes.py').main(
        ['coco', root, '--num-train', '2', '--num-val', str(NUM_IMAGES), '--size', '96'])
    return [osp.join(root, 'val2017', f'{i:06d}.png') for i in range(1, NUM_IMAGES + 1)]


def random_checkpoint(config: str, path: str, seed: int) -> str:
    """Weights at a trained network's scale (random), saved with the dataset's classes as a
    training checkpoint is."""
    module, metadata = build_from_config(config)
    randomise_(module.model, seed=seed)
    torch.save({'state_dict': module.model.state_dict(),
                'meta': {'dataset_meta': {'classes': metadata['classes']}}}, path)
    return path


def run_infer(model: str, images: list, out: str) -> subprocess.CompletedProcess:
    blocker = f'import sys; sys.modules.update(dict.fromkeys({NOT_NEEDED!r}))'
    runner = f'{blocker}; import runpy; sys.argv = sys.argv[1:]; ' \
             f'runpy.run_path(sys.argv[0], run_name="__main__")'
    return subprocess.run([sys.executable, '-c', runner, INFER, model, *images, '--out', out],
                          capture_output=True, text=True)


def read_detections(path: str) -> dict:
    records = json.load(open(path))['detections']
    infer = load_tool(INFER)
    detections = dict(boxes=np.array([r['box'] for r in records], dtype=np.float32).reshape(-1, 4),
                      scores=np.array([r['score'] for r in records], dtype=np.float32),
                      labels=np.array([r['label'] for r in records], dtype=np.int64))
    if records and 'mask' in records[0]:
        detections['masks'] = np.stack([infer.decode_rle(r['mask']) for r in records])
    return detections


def inferencer_detections(config: str, checkpoint: str, images: list) -> list:
    from mmdet.apis import DetInferencer
    inferencer = DetInferencer(model=config, weights=checkpoint, device='cpu',
                               show_progress=False)
    results = inferencer(images, return_datasamples=True)['predictions']
    detections = []
    for sample in results:
        instances = sample.pred_instances
        found = dict(boxes=instances.bboxes.numpy(), scores=instances.scores.numpy(),
                     labels=instances.labels.numpy())
        if 'masks' in instances:
            found['masks'] = instances.masks.numpy().astype(bool)
        detections.append(found)
    return detections


@pytest.mark.slow
@pytest.mark.parametrize('config, outputs', [
    ('configs/demo/det_shapes.py', ['boxes', 'scores', 'labels']),
    ('configs/demo/mask_shapes.py', ['boxes', 'scores', 'labels', 'masks']),
])
def test_two_stage_detector_matches_det_inferencer(tmp_path, capsys, shapes_val, config,
                                                   outputs):
    """Export with the tool (dynamic sizes, --verify against PyTorch at two sizes and against
    DetInferencer on 4 images), then onnx_infer.py on all 8 without torch: the detections in
    its JSON are DetInferencer's."""
    checkpoint = random_checkpoint(config, str(tmp_path / 'weights.pth'), seed=1)
    out = str(tmp_path / 'detector.onnx')
    load_tool(EXPORT).main([config, checkpoint, '--shape', '96', '128', '--out', out,
                            '--dynamic', '--verify', '--images', *shapes_val[:4]])
    text = capsys.readouterr().out
    assert f'outputs: {", ".join(outputs)}' in text
    assert 'score_thr=0.05, nms_iou=0.5, max_per_img=20' in text  # the demo's test_cfg
    checks = [line for line in text.splitlines() if line.startswith('verify ')]
    assert len(checks) == 6, text
    assert all(line.endswith((' ok', 'ok atol 0.0001')) for line in checks), text
    graph = onnx.load(out).graph
    assert [o.name for o in graph.output] == outputs
    assert {'NonMaxSuppression', 'RoiAlign'} <= {node.op_type for node in graph.node}
    metadata = read_metadata(out)
    assert metadata['classes'][:2] == ['circle', 'square'] and metadata['part'] == 'all'

    result = run_infer(out, shapes_val, str(tmp_path / 'infer'))
    assert result.returncode == 0, result.stderr
    expected = inferencer_detections(config, checkpoint, shapes_val)
    assert sum(len(e['scores']) for e in expected) >= NUM_IMAGES * 5  # detections to compare
    for image, want in zip(shapes_val, expected):
        stem = osp.splitext(osp.basename(image))[0]
        report = match_detections(want, read_detections(str(tmp_path / 'infer' / f'{stem}.json')))
        assert agrees(report), (image, report)
        assert osp.getsize(tmp_path / 'infer' / f'{stem}.png') > 0


@pytest.mark.slow
def test_no_detection_is_an_empty_result(tmp_path):
    """Nothing above the score threshold: every output is empty, in PyTorch and ONNX Runtime,
    masks included (mmdet branches on the count; the graph has no branch on it)."""
    import onnxruntime as ort
    from mmengine.config import Config
    from mmengine.registry import DefaultScope, MODELS

    from tnt_mm.deployment.detector_export import TwoStageDetectorPath
    cfg = Config.fromfile('configs/demo/mask_shapes.py')
    cfg.model.test_cfg.rcnn.score_thr = 1.0  # no softmax score is above 1
    with DefaultScope.overwrite_default_scope('mmdet'):
        module = TwoStageDetectorPath(MODELS.build(cfg.model)).eval()
    out = str(tmp_path / 'empty.onnx')
    export_onnx(module, out, 96, 128, dynamic=True)
    inputs = torch.randn(1, 3, 80, 100)
    with torch.no_grad():
        expected = [tuple(t.shape) for t in module(inputs)]
    session = ort.InferenceSession(out, providers=['CPUExecutionProvider'])
    got = [o.shape for o in session.run(None, {'inputs': inputs.numpy()})]
    assert got == expected == [(0, 4), (0,), (0,), (0, 28, 28)]


def tiny_detr_config(tmp_path) -> str:
    """configs/detr_tnt_s.py with a 4-block TNT and 2-layer encoder and decoder."""
    path = tmp_path / 'detr_tiny.py'
    path.write_text(
        f"_base_ = ['{osp.abspath('configs/detr_tnt_s.py')}']\n"
        "model = dict(\n"
        "    backbone=dict(arch=dict(_delete_=True, inner_dim=12, inner_heads=2, outer_dim=96,\n"
        "                            outer_heads=2, depth=4), out_indices=(3,)),\n"
        "    neck=dict(neck=dict(in_channels=[96])),\n"
        "    encoder=dict(num_layers=2), decoder=dict(num_layers=2))\n")
    return str(path)


@pytest.mark.slow
def test_detr_matches_mmdet_at_two_sizes(tmp_path):
    """DETR exported whole, with its mask from the input's shape: one dynamic file gives
    mmdet's own predictions (random weights) at two sizes and aspect ratios."""
    from mmdet.structures import DetDataSample
    module, metadata = build_from_config(tiny_detr_config(tmp_path))
    randomise_(module.model, seed=2)
    out = str(tmp_path / 'detr.onnx')
    export_onnx(module, out, 96, 128, dynamic=True, metadata=metadata)
    assert read_metadata(out)['test_cfg'] == dict(max_per_img=100, pad_size_divisor=1)
    import onnxruntime as ort
    session = ort.InferenceSession(out, providers=['CPUExecutionProvider'])
    for height, width in [(96, 128), (150, 110)]:
        inputs = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(height))
        sample = DetDataSample(metainfo=dict(img_shape=(height, width), ori_shape=(height, width),
                                             scale_factor=(1.0, 1.0),
                                             batch_input_shape=(height, width)))
        with torch.no_grad():
            want = module.model.predict(inputs, [sample])[0].pred_instances
        boxes, scores, labels = session.run(None, {'inputs': inputs.numpy()})
        report = match_detections(
            dict(boxes=want.bboxes.numpy(), scores=want.scores.numpy(),
                 labels=want.labels.numpy()),
            dict(boxes=boxes, scores=scores, labels=labels))
        assert report['expected'] == 100 and agrees(report), report
        assert report['max_box_diff'] < 1e-2 and report['max_score_diff'] < 1e-5, report


# ---- onnx_infer.py's own pieces against what mmcv / mmdet do ----

@pytest.mark.parametrize('size, scale, keep_ratio', [
    ((128, 96), (128, 96), True), ((640, 427), (1333, 800), True),
    ((300, 500), (1333, 800), True), ((97, 61), (128, 96), False)])
def test_infer_resizes_as_mmcv(size, scale, keep_ratio):
    import mmcv
    infer = load_tool(INFER)
    image = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    if keep_ratio:
        want = mmcv.imrescale(image, scale, interpolation='bilinear')
    else:
        want = mmcv.imresize(image, scale, interpolation='bilinear')
    new_w, new_h = infer.resized_size(size[0], size[1], dict(scale=scale, keep_ratio=keep_ratio))
    assert (new_h, new_w) == want.shape[:2]
    got = infer.resize_bilinear(image, new_w, new_h)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1  # OpenCV's fixed point


def test_infer_pastes_masks_as_mmdet():
    from mmdet.models.roi_heads.mask_heads.fcn_mask_head import _do_paste_mask
    infer = load_tool(INFER)
    generator = torch.Generator().manual_seed(0)
    masks = torch.rand(6, 28, 28, generator=generator)
    boxes = torch.tensor([[10.0, 5.0, 60.0, 40.0], [0.0, 0.0, 127.9, 95.9], [3.3, 7.7, 9.1, 12.4],
                          [100.5, 60.2, 140.0, 110.0], [-5.0, -3.0, 20.0, 30.0],
                          [50.0, 50.0, 50.5, 80.0]])
    pasted, _ = _do_paste_mask(masks[:, None], boxes, 96, 128, skip_empty=False)
    want = (pasted >= 0.5).numpy()
    got = infer.paste_masks(masks.numpy(), boxes.numpy(), 96, 128, 0.5)
    assert got.shape == want.shape
    # float32 (mmdet) against float64 (here) may flip a pixel whose value is at the threshold
    assert (got != want).sum() <= 2, (got != want).sum((1, 2))


def test_rle_round_trip():
    infer = load_tool(INFER)
    rng = np.random.default_rng(1)
    for mask in [rng.random((7, 5)) > 0.5, np.ones((3, 4), bool), np.zeros((4, 3), bool)]:
        rle = infer.encode_rle(mask)
        assert sum(rle['counts']) == mask.size and rle['size'] == list(mask.shape)
        np.testing.assert_array_equal(infer.decode_rle(rle), mask)
    assert infer.encode_rle(np.array([[1, 1, 0]], bool))['counts'] == [0, 2, 1]


def test_match_detections_pairs_by_label_and_box():
    expected = dict(boxes=np.array([[0, 0, 10, 10], [5, 5, 20, 20]], np.float32),
                    scores=np.array([0.9, 0.8]), labels=np.array([1, 2]))
    swapped = dict(boxes=expected['boxes'][::-1] + 0.5, scores=expected['scores'][::-1] + 1e-4,
                   labels=expected['labels'][::-1])
    report = match_detections(expected, swapped)
    assert agrees(report) and report['max_box_diff'] == 0.5
    relabelled = dict(swapped, labels=np.array([2, 3]))
    report = match_detections(expected, relabelled)
    assert not agrees(report) and report['unmatched'] == [('expected', 0), ('got', 1)]
    moved = dict(swapped, boxes=swapped['boxes'] + 1.0)
    assert not agrees(match_detections(expected, moved))


def test_infer_refuses_a_file_that_is_not_a_whole_detector(tmp_path):
    """A backbone file has no detections to draw: the tool says what the file is."""
    from tnt_mm.deployment.onnx_export import BackbonePath
    from tnt_mm.models import TNT
    backbone = TNT(dict(inner_dim=12, inner_heads=2, outer_dim=96, outer_heads=2, depth=2),
                   out_type='featmap', out_indices=(1,))
    module = BackbonePath(backbone).eval()
    out = str(tmp_path / 'backbone.onnx')
    export_onnx(module, out, 64, 64, metadata=dict(task='detection', part='backbone'))
    image = tmp_path / 'image.png'
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    result = run_infer(out, [str(image)], str(tmp_path / 'out'))
    assert result.returncode == 2
    assert "not a detector exported whole" in result.stderr and "part='backbone'" in result.stderr


def test_infer_names_a_size_a_static_file_cannot_take(monkeypatch, capsys):
    infer = load_tool(INFER)

    class StaticSession:  # the input of a file exported without --dynamic
        def get_inputs(self):
            return [type('Input', (), dict(shape=[1, 3, 96, 128]))]

    metadata = dict(input=dict(name='inputs', mean=[0.0] * 3, std=[1.0] * 3, rgb=True),
                    resize=dict(scale=[128, 96], keep_ratio=True))
    square = Image.fromarray(np.zeros((100, 100, 3), np.uint8))
    monkeypatch.setattr(infer.Image, 'open', lambda path: square)
    with pytest.raises(SystemExit) as exit_info:
        infer.detect(StaticSession(), metadata, 'square.png')
    assert exit_info.value.code == 2
    assert 'square.png resizes to 96x96, but the file was exported for 96x128 only: export it ' \
        'with --dynamic' in capsys.readouterr().err
