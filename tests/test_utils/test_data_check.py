"""Bad datasets are reported before the Runner builds anything, naming the key, the path and
the fix: a missing data_root, an empty or malformed annotation file, labels outside the
classes (classification lists and segmentation label maps)."""
import json
import shutil

import numpy as np
import pytest
from helpers import load_tool, toy_cls_options
from mmengine.config import Config
from PIL import Image

from tnt_mm.utils.data_check import DataCheckError, check_data

make_shapes = load_tool('tools/data/make_shapes.py')
train = load_tool('tools/train.py')


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp('data_check')
    cls = str(root / 'cls')
    make_shapes.main(['imagenet', cls, '--num-train', '6', '--num-val', '6', '--size', '16'])
    coco = str(root / 'coco')
    make_shapes.main(['coco', coco, '--num-train', '2', '--num-val', '2', '--size', '32'])
    return root, cls, coco


def copy(tmp_path, source, name='data'):
    target = tmp_path / name
    shutil.copytree(source, target)
    return target


def cls_config(root) -> Config:
    cfg = Config.fromfile('configs/demo/cls_shapes.py')
    cfg.merge_from_dict(dict(o.split('=', 1) for o in toy_cls_options(str(root))
                             if 'data_root' in o))
    return cfg


def test_good_datasets_pass(shapes):
    _, cls, coco = shapes
    check_data(cls_config(cls), ('train', 'val', 'test'))
    check_data(coco_config(coco), ('train', 'val'))


def test_missing_data_root_stops_train_tool_first(tmp_path):
    """tools/train.py: the message comes before the Runner is built."""
    with pytest.raises(DataCheckError, match=r"train_dataloader.dataset.data_root='.*nowhere' is "
                                             r'not a directory.*--cfg-options train_dataloader'):
        train.main(['configs/demo/cls_shapes.py', '--work-dir', str(tmp_path), '--cfg-options',
                    *toy_cls_options(str(tmp_path / 'nowhere'))])


@pytest.mark.parametrize('content,message', [
    ('', r'meta/train.txt is empty \(0 bytes\)'),
    ('\n\n', r'meta/train.txt has no entries'),
    ('circle/a.png\n', r"meta/train.txt line 1 is 'circle/a.png'; expected \"<image path> "
                       r'<label>\"'),
    ('circle/a.png 0\nstar/b.png 6\n', r'line 2 has label 6, but the model has 6 classes '
                                       r'\(0..5\)'),
])
def test_classification_list(shapes, tmp_path, content, message):
    root = copy(tmp_path, shapes[1])
    (root / 'meta' / 'train.txt').write_text(content)
    with pytest.raises(DataCheckError, match=message):
        check_data(cls_config(root), ('train',))


def coco_config(root) -> Config:
    """The Faster R-CNN config, reading the generated COCO data."""
    cfg = Config.fromfile('configs/faster_rcnn_tnt_ti_fpn.py')
    for split in ('train', 'val'):
        cfg[f'{split}_dataloader'].dataset.update(
            data_root=str(root) + '/', ann_file=f'annotations/instances_{split}2017.json',
            data_prefix=dict(img=f'{split}2017/'))
    return cfg


@pytest.mark.parametrize('content,message', [
    ('', r'instances_train2017.json is empty'),
    ('{"images": [', r'instances_train2017.json is not valid JSON \(Expecting value'),
    (json.dumps(dict(images=[])), r'is not COCO: it has no "annotations" list'),
    (json.dumps(dict(images=[], annotations=[], categories=[])), r'lists 0 images and 0 '
                                                                 r'categories; there is nothing'),
])
def test_coco_annotations(shapes, tmp_path, content, message):
    root = copy(tmp_path, shapes[2])
    (root / 'annotations' / 'instances_train2017.json').write_text(content)
    with pytest.raises(DataCheckError, match=message):
        check_data(coco_config(root), ('train',))


def test_missing_image_folder(shapes, tmp_path):
    root = copy(tmp_path, shapes[2])
    shutil.rmtree(root / 'val2017')
    with pytest.raises(DataCheckError, match=r'val_dataloader.dataset.data_prefix.img: .*val2017/ '
                                             r'is not a directory'):
        check_data(coco_config(root), ('train', 'val'))


def seg_config(root, reduce_zero_label=True) -> Config:
    """An mmseg ADE20K-layout dataset and a 6-class decode head."""
    return Config(dict(
        default_scope='mmseg',
        model=dict(type='EncoderDecoder', decode_head=dict(type='UPerHead', num_classes=6)),
        train_dataloader=dict(dataset=dict(
            type='ADE20KDataset', data_root=str(root), reduce_zero_label=reduce_zero_label,
            data_prefix=dict(img_path='images/training', seg_map_path='annotations/training')))))


def write_seg(root, values):
    for folder in ('images/training', 'annotations/training'):
        (root / folder).mkdir(parents=True)
    for i, value in enumerate(values):
        label = np.zeros((8, 8), np.uint8)
        label[2:5, 2:5] = value
        Image.fromarray(label).save(root / 'annotations' / 'training' / f'{i}.png')
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / 'images' / 'training' /
                                                            f'{i}.jpg')


def test_label_maps(tmp_path):
    good = tmp_path / 'good'
    write_seg(good, [1, 6, 255])  # 0 and 255 ignored, 1..6 -> classes 0..5
    check_data(seg_config(good), ('train',))
    bad = tmp_path / 'bad'
    write_seg(bad, [1, 7])
    with pytest.raises(DataCheckError, match=r'label map .*1.png has values \[7\], but the model '
                                             r'has decode_head.num_classes=6: expected 1..6'):
        check_data(seg_config(bad), ('train',))
    # without reduce_zero_label, 6 is out of range too
    with pytest.raises(DataCheckError, match=r'values \[6\].*expected 0..5 or 255'):
        check_data(seg_config(good, reduce_zero_label=False), ('train',))


def test_no_label_maps(tmp_path):
    root = tmp_path / 'empty'
    write_seg(root, [])
    with pytest.raises(DataCheckError, match=r'no label maps \(\*.png\) under'):
        check_data(seg_config(root), ('train',))
