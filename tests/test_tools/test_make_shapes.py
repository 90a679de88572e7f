"""The synthetic dataset generator writes real formats, deterministically."""
import filecmp
import json
import os.path as osp

import numpy as np
import pytest
from PIL import Image
from helpers import load_tool

make_shapes = load_tool('tools/data/make_shapes.py')


@pytest.mark.parametrize('layout', ['imagenet', 'coco', 'ade'])
def test_same_seed_same_files(layout, tmp_path):
    for name in ('a', 'b'):
        make_shapes.main([layout, str(tmp_path / name), '--num-train', '6', '--num-val', '3',
                          '--size', '48'])
    compare = filecmp.dircmp(tmp_path / 'a', tmp_path / 'b')
    assert not compare.diff_files and not compare.left_only and not compare.right_only
    assert not (tmp_path / 'a.partial').exists()


def test_coco_layout_reads_and_scores_perfectly(tmp_path):
    from mmdet.datasets import CocoDataset
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    root = str(tmp_path / 'coco')
    make_shapes.main(['coco', root, '--num-train', '12', '--num-val', '6', '--size', '96'])
    dataset = CocoDataset(data_root=root, ann_file='annotations/instances_val2017.json',
                          data_prefix=dict(img='val2017/'), metainfo=dict(classes=make_shapes.CLASSES),
                          pipeline=[], test_mode=True)
    assert len(dataset) == 6
    first = dataset[0]
    assert osp.isfile(first['img_path']) and first['instances']
    for instance in first['instances']:
        x1, y1, x2, y2 = instance['bbox']
        assert 0 <= x1 < x2 <= first['width'] and 0 <= y1 < y2 <= first['height']
        assert len(instance['mask'][0]) >= 6  # a polygon

    # The ground truth, scored as detections, must give AP 1: boxes, ids and masks agree.
    annotation_file = osp.join(root, 'annotations', 'instances_val2017.json')
    truth = COCO(annotation_file)
    annotations = json.load(open(annotation_file))['annotations']
    for kind in ('bbox', 'segm'):
        detections = truth.loadRes([dict(image_id=a['image_id'], category_id=a['category_id'],
                                         bbox=a['bbox'], segmentation=a['segmentation'],
                                         score=1.0) for a in annotations])
        evaluation = COCOeval(truth, detections, kind)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
        assert evaluation.stats[0] > 0.99, kind


def test_ade_layout_reads_with_reduce_zero_label(tmp_path):
    """mmseg reads the ADE20K layout as ADE20K: background 0 becomes 255 (ignored), shapes
    1-6 become classes 0-5, and each class's pixels are where the image shows that shape."""
    from mmseg.datasets import BaseSegDataset
    from mmseg.datasets.transforms import LoadAnnotations
    root = str(tmp_path / 'ade')
    make_shapes.main(['ade', root, '--num-train', '8', '--num-val', '4', '--size', '48'])
    dataset = BaseSegDataset(
        data_root=root, data_prefix=dict(img_path='images/validation',
                                         seg_map_path='annotations/validation'),
        img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=True,
        metainfo=dict(classes=make_shapes.CLASSES), pipeline=[], test_mode=True)
    assert len(dataset) == 4
    load = LoadAnnotations(reduce_zero_label=True)
    seen = set()
    for info in dataset:
        assert osp.isfile(info['img_path']) and info['reduce_zero_label']
        label = load(dict(info, seg_fields=[]))['gt_seg_map']
        assert label.shape == (48, 64)
        values = set(np.unique(label).tolist())
        assert values <= set(range(len(make_shapes.CLASSES))) | {255}, values
        assert 255 in values  # the background
        seen |= values - {255}
        raw = np.asarray(Image.open(info['seg_map_path']))
        assert set(np.unique(raw).tolist()) <= set(range(len(make_shapes.CLASSES) + 1))
        image = np.asarray(Image.open(info['img_path']).convert('HSV'))
        # shapes are saturated, the background is not: saturation tells them apart
        shape_saturation = image[..., 1][label != 255].mean()
        background_saturation = image[..., 1][label == 255].mean()
        assert shape_saturation > background_saturation + 60
    assert seen  # some shapes are labelled


def test_radius_range_sets_the_shape_sizes(tmp_path):
    """--radius-range makes larger shapes (the detection demo's), and is recorded."""
    sizes = {}
    for name, extra in (('default', []), ('large', ['--radius-range', '0.2', '0.3'])):
        root = tmp_path / name
        make_shapes.main(['coco', str(root), '--num-train', '2', '--num-val', '8', '--size',
                          '96', *extra])
        with open(root / 'annotations' / 'instances_val2017.json') as f:
            boxes = [a['bbox'] for a in json.load(f)['annotations']]
        sizes[name] = [max(w, h) for _, _, w, h in boxes]
    # a shape of radius r spans at most 2r: 0.2 * 96 * 2 = 38.4 px for the default range
    assert max(sizes['default']) <= 2 * 0.2 * 96 + 1
    assert min(sizes['large']) >= 0.2 * 96 * 0.9  # even a triangle spans more than 0.9 r
    assert json.loads((tmp_path / 'large' / 'info.json').read_text())['radius_range'] == [0.2, 0.3]


@pytest.mark.parametrize('bad', [['0', '0.2'], ['0.3', '0.2'], ['0.1', '0.6']])
def test_radius_range_rejects_impossible_values(bad, tmp_path, capsys):
    with pytest.raises(SystemExit):
        make_shapes.main(['coco', str(tmp_path / 'x'), '--radius-range', *bad])
    assert '--radius-range' in capsys.readouterr().err
