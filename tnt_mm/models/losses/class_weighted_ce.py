"""Cross-entropy with per-class weights for mmseg decode heads.

mmseg 1.2.2's ``CrossEntropyLoss(class_weight=...)`` computes its normaliser by indexing the
weight table with every label, ignored ones included: any ignored pixel (255, e.g. the padding
of an image smaller than the crop) raises ``IndexError``, and it loops over the batch in Python.
This loss is the same weighted mean, ``sum(w[y] * ce) / sum(w[y])`` over the labelled pixels,
as PyTorch's ``F.cross_entropy(weight=...)`` computes it.
"""
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from tnt_mm.registry import MODELS


@MODELS.register_module()
class ClassWeightedCrossEntropyLoss(nn.Module):
    """Softmax cross-entropy weighted per class, averaged over the labelled pixels with the
    weights as the normaliser (as ``F.cross_entropy(weight=..., reduction='mean')``).

    Args:
        class_weight (Sequence[float]): one weight per class.
        loss_weight (float): factor on the loss. Defaults to 1.0.
        loss_name (str): its name in the logs (mmseg sums the losses whose names start with
            ``loss_``). Defaults to ``'loss_ce'``.
    """

    def __init__(self, class_weight: Sequence[float], loss_weight: float = 1.0,
                 loss_name: str = 'loss_ce') -> None:
        super().__init__()
        if not class_weight or min(class_weight) < 0:
            raise ValueError(f'class_weight={class_weight}: give one non-negative weight per '
                             f'class')
        self.register_buffer('class_weight', torch.tensor(class_weight, dtype=torch.float32),
                             persistent=False)
        self.loss_weight = loss_weight
        self._loss_name = loss_name

    @property
    def loss_name(self) -> str:
        return self._loss_name

    def forward(self, cls_score: torch.Tensor, label: torch.Tensor,
                weight: Optional[torch.Tensor] = None, avg_factor=None,
                reduction_override=None, ignore_index: int = 255, **kwargs) -> torch.Tensor:
        """(N, C, H, W) logits and (N, H, W) labels; ``weight``: optional per-pixel weights
        (mmseg's pixel samplers)."""
        if cls_score.shape[1] != len(self.class_weight):
            raise ValueError(f'{cls_score.shape[1]} classes in the logits but '
                             f'{len(self.class_weight)} class weights')
        class_weight = self.class_weight.to(cls_score.dtype)
        if weight is None:
            return self.loss_weight * F.cross_entropy(cls_score, label, weight=class_weight,
                                                      ignore_index=ignore_index)
        losses = F.cross_entropy(cls_score, label, weight=class_weight,
                                 ignore_index=ignore_index, reduction='none')
        labelled = label != ignore_index
        norm = (class_weight[label.clamp(0, len(class_weight) - 1)] * labelled * weight).sum()
        return self.loss_weight * (losses * weight).sum() / norm.clamp(min=1e-12)
