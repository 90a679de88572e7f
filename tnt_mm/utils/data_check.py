"""Check a config's datasets before the Runner builds anything.

A missing folder, an empty or malformed annotation file, or a label outside the classes
otherwise surfaces late: as a ``FileNotFoundError`` or ``JSONDecodeError`` deep in the dataset
build, as an "index out of bounds" in the loss after minutes of start-up (a device-side assert
on a GPU), or not at all (an empty annotation list trains zero iterations per epoch). These
checks read only the configs, the annotation files and a sample of label maps, and name the
config key, the path, and what to do.
"""
import inspect
import json
import os
import os.path as osp
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
from mmengine.config import Config

# Label maps read per dataset: enough to catch a wrongly encoded dataset, cheap for 20k maps.
NUM_LABEL_MAPS_SAMPLED = 16


class DataCheckError(ValueError):
    """A dataset of the config cannot be used as it is."""


def check_data(cfg: Config, splits: Sequence[str] = ('train', 'val')) -> None:
    """Check the datasets of ``<split>_dataloader`` for each split in ``splits``.

    Raises:
        DataCheckError: naming the config key, the path, and the fix.
    """
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        if not loader or not loader.get('dataset'):
            continue
        for where, dataset in _datasets(loader['dataset'], f'{split}_dataloader.dataset'):
            _check_dataset(cfg, where, dataset)


def _datasets(dataset: dict, where: str) -> Iterator[Tuple[str, dict]]:
    """The leaf datasets inside wrappers (RepeatDataset, ConcatDataset, ...)."""
    if isinstance(dataset.get('dataset'), dict):
        yield from _datasets(dataset['dataset'], f'{where}.dataset')
    elif isinstance(dataset.get('datasets'), (list, tuple)):
        for i, inner in enumerate(dataset['datasets']):
            yield from _datasets(inner, f'{where}.datasets.{i}')
    else:
        yield where, dataset


def _join(root: str, path: str) -> str:
    return path if not root or osp.isabs(path) or '://' in path else osp.join(root, path)


def _check_dataset(cfg: Config, where: str, dataset: dict) -> None:
    root = dataset.get('data_root') or ''
    if root and '://' not in root and not osp.isdir(root):
        raise DataCheckError(
            f'{where}.data_root={root!r} is not a directory. Put the dataset there (see the '
            f'README for its layout), or point to it with --cfg-options {where}.data_root=PATH')
    prefix = dataset.get('data_prefix') or {}
    prefixes = {'data_prefix': prefix} if isinstance(prefix, str) else {
        f'data_prefix.{key}': value for key, value in prefix.items()}
    for key, value in prefixes.items():
        folder = _join(root, value)
        if value and '://' not in folder and not osp.isdir(folder):
            raise DataCheckError(f'{where}.{key}: {folder} is not a directory; the dataset '
                                 f'is incomplete or {where}.{key} is wrong')
    ann_file = dataset.get('ann_file') or ''
    if ann_file:
        _check_ann_file(cfg, where, dataset, _join(root, ann_file))
    if isinstance(prefix, dict) and prefix.get('seg_map_path'):
        _check_label_maps(cfg, where, dataset, _join(root, prefix['seg_map_path']))


def _check_ann_file(cfg: Config, where: str, dataset: dict, path: str) -> None:
    if '://' in path:
        return
    if not osp.isfile(path):
        raise DataCheckError(f'{where}.ann_file: {path} does not exist. Generate or download '
                             f'the annotations, or set {where}.ann_file')
    if osp.getsize(path) == 0:
        raise DataCheckError(f'{where}.ann_file: {path} is empty (0 bytes); it was probably '
                             f'cut off while being written: generate it again')
    if path.endswith('.json'):
        with open(path) as f:
            try:
                content = json.load(f)
            except json.JSONDecodeError as exc:
                raise DataCheckError(f'{where}.ann_file: {path} is not valid JSON ({exc}); '
                                     f'generate it again') from None
        if isinstance(content, dict) and 'images' in content:  # COCO
            for key in ('images', 'annotations', 'categories'):
                if not isinstance(content.get(key), list):
                    raise DataCheckError(f'{where}.ann_file: {path} is not COCO: it has no '
                                         f'"{key}" list')
            if not content['images'] or not content['categories']:
                raise DataCheckError(f'{where}.ann_file: {path} lists '
                                     f'{len(content["images"])} images and '
                                     f'{len(content["categories"])} categories; there is '
                                     f'nothing to train or evaluate on')
        elif isinstance(content, dict) and 'data_list' in content and not content['data_list']:
            raise DataCheckError(f'{where}.ann_file: {path} has an empty "data_list"')
        return
    with open(path) as f:
        lines = [(n, line.strip()) for n, line in enumerate(f, 1) if line.strip()]
    if not lines:
        raise DataCheckError(f'{where}.ann_file: {path} has no entries (only blank lines)')
    num_classes = (cfg.get('model') or {}).get('head', {}).get('num_classes')
    if cfg.get('default_scope') == 'mmpretrain' and dataset.get('with_label', True) \
            and num_classes:
        _check_label_list(where, path, lines, num_classes)


def _check_label_list(where: str, path: str, lines: List[Tuple[int, str]],
                      num_classes: int) -> None:
    """mmpretrain's list format: one ``<image path> <label>`` per line."""
    for number, line in lines:
        parts = line.rsplit(maxsplit=1)
        label = parts[1] if len(parts) == 2 else ''
        if not label.lstrip('-').isdigit():
            raise DataCheckError(f'{where}.ann_file: {path} line {number} is {line!r}; '
                                 f'expected "<image path> <label>"')
        if not 0 <= int(label) < num_classes:
            raise DataCheckError(f'{where}.ann_file: {path} line {number} has label {label}, '
                                 f'but the model has {num_classes} classes (0..'
                                 f'{num_classes - 1}); fix the list or model.head.num_classes')


def _dataset_default(cfg: Config, dataset: dict, name: str, fallback):
    """A dataset argument: from the config, else the dataset class's default."""
    if name in dataset:
        return dataset[name]
    kind = dataset.get('type', '')
    if isinstance(kind, str) and '.' not in kind and cfg.get('default_scope'):
        kind = f'{cfg.default_scope}.{kind}'  # e.g. mmseg.ADE20KDataset
    try:
        from mmengine.registry import DATASETS
        cls = DATASETS.get(kind) if isinstance(kind, str) else kind
        if isinstance(cls, type):
            param = inspect.signature(cls.__init__).parameters.get(name)
            if param is not None and param.default is not inspect.Parameter.empty:
                return param.default
    except Exception:  # an unknown type is reported by the dataset build itself
        pass
    return fallback


def _check_label_maps(cfg: Config, where: str, dataset: dict, folder: str) -> None:
    """Sample label maps: every value must be a class index or the ignore index."""
    from PIL import Image
    head = (cfg.get('model') or {}).get('decode_head') or {}
    if isinstance(head, (list, tuple)):  # cascade heads: the last one predicts the classes
        head = head[-1]
    num_classes: Optional[int] = head.get('num_classes')
    if not num_classes or '://' in folder:
        return
    ignore_index = head.get('ignore_index', 255)
    suffix = _dataset_default(cfg, dataset, 'seg_map_suffix', '.png')
    reduce_zero_label = bool(_dataset_default(cfg, dataset, 'reduce_zero_label', False))
    files = sorted(osp.join(d, f) for d, _, names in os.walk(folder) for f in names
                   if f.endswith(suffix))
    if not files:
        raise DataCheckError(f'{where}: no label maps (*{suffix}) under {folder}')
    step = max(1, len(files) // NUM_LABEL_MAPS_SAMPLED)
    for path in files[::step][:NUM_LABEL_MAPS_SAMPLED]:
        values = np.unique(np.asarray(Image.open(path)))
        labels = values.astype(np.int64)
        if reduce_zero_label:  # as mmseg's LoadAnnotations: 0 -> ignore, v -> v - 1
            labels = np.where(labels == 0, 255, labels - 1)
            labels[labels == 254] = 255
        bad = values[(labels >= num_classes) & (labels != ignore_index)]
        if bad.size:
            expected = (f'1..{num_classes} (0 and 255 ignored, reduce_zero_label=True)'
                        if reduce_zero_label else f'0..{num_classes - 1} or {ignore_index}')
            raise DataCheckError(
                f'{where}: label map {path} has values {bad.tolist()}, but the model has '
                f'decode_head.num_classes={num_classes}: expected {expected}. Fix the label '
                f'maps, or set num_classes / reduce_zero_label to match them')
