"""Evaluation helpers registered in the ``tnt_mm`` scope (imported when a config names them)."""
from .iou_metric import IoUMetric

__all__ = ['IoUMetric']
