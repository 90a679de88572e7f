"""Name an image with the wrong number of channels before the data preprocessor meets it.

The backbone checks its input, but in a full model the data preprocessor comes first and
fails less clearly: mmpretrain's and mmseg's broadcast a 3-value mean against a 4-channel image
("The size of tensor a (4) must match the size of tensor b (3)"), or silently repeat a
1-channel image three times; mmdet's asserts on the shape. This hook sees the batch as loaded.
"""
from typing import Optional

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from tnt_mm.registry import HOOKS


@HOOKS.register_module()
class CheckInputHook(Hook):
    """Raise ``ValueError`` when a loaded image has another channel count than the backbone's
    ``in_channels``. Every config of this package inherits it from
    ``configs/_base_/tnt_runtime.py``."""

    priority = 'HIGHEST'  # before anything else looks at the batch

    def _check(self, runner, stage: str, batch_idx: int, data_batch: Optional[dict]) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        expected = getattr(getattr(model, 'backbone', None), 'in_channels', None)
        inputs = (data_batch or {}).get('inputs') if isinstance(data_batch, dict) else None
        if not isinstance(expected, int) or inputs is None:
            return
        if torch.is_tensor(inputs):  # a stacked (B, C, H, W) batch
            images = list(inputs) if inputs.dim() == 4 else []
        else:  # a list of (C, H, W) images, as mmengine's pseudo_collate gives
            images = list(inputs)
        for i, image in enumerate(images):
            if not torch.is_tensor(image) or image.dim() != 3 or image.shape[0] == expected:
                continue
            samples = data_batch.get('data_samples') or []
            path = samples[i].metainfo.get('img_path') if i < len(samples) and hasattr(
                samples[i], 'metainfo') else None
            raise ValueError(
                f'{stage} batch {batch_idx}, image {i}' + (f' ({path})' if path else '')
                + f': {image.shape[0]} channels, but the model takes {expected}-channel images '
                f'(model.backbone.in_channels={expected}). Load images with '
                f"color_type='color' (3 channels) in the pipeline, or build the backbone with "
                f'in_channels={image.shape[0]} and a data_preprocessor mean/std of that length')

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._check(runner, 'train', batch_idx, data_batch)

    def before_val_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._check(runner, 'val', batch_idx, data_batch)

    def before_test_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._check(runner, 'test', batch_idx, data_batch)
