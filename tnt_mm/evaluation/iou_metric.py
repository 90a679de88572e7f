"""mmseg's IoU metric, also reporting the mean IoU without the background class.

A dataset whose background is a class the model learns (as the segmentation demo's) has its
mIoU dominated by it, while datasets that ignore the background (``reduce_zero_label``, as
ADE20K) average over the objects only. Reporting both keeps the number comparable either way.
"""
from typing import Optional

import numpy as np
from mmseg.evaluation import IoUMetric as MMSegIoUMetric

from tnt_mm.registry import METRICS


@METRICS.register_module()
class IoUMetric(MMSegIoUMetric):
    """mmseg's ``IoUMetric`` plus ``mIoU_without_background`` (the mean over the other classes).

    Args:
        background_index (int, optional): the background's class index; None reports mmseg's
            metrics only. Defaults to 0.
        **kwargs: mmseg's ``IoUMetric`` arguments.
    """

    def __init__(self, background_index: Optional[int] = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.background_index = background_index

    def compute_metrics(self, results: list) -> dict:
        metrics = super().compute_metrics(results)
        if self.background_index is None or 'mIoU' not in metrics:
            return metrics
        totals = [sum(r[i] for r in results) for i in range(4)]
        iou = np.asarray(self.total_area_to_metrics(*totals, metrics=['mIoU'])['IoU'])
        keep = np.ones(len(iou), dtype=bool)
        keep[self.background_index] = False
        metrics['mIoU_without_background'] = float(np.round(np.nanmean(iou[keep]) * 100, 2))
        return metrics
