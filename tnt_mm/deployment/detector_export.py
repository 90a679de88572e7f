"""Whole detectors for ONNX: image in, boxes, scores and labels (and masks) out.

mmdet's post-processing calls mmcv's ``nms`` and ``roi_align``, which have no ONNX export, and
branches on data (empty results, per-level index lists). The modules here run the same
computation in plain torch for one image: torchvision's ``nms`` and ``roi_align`` (which
ONNX's ``NonMaxSuppression`` and ``RoiAlign`` implement), fixed-size gathers in place of the
index lists, and the config's ``test_cfg`` read once and baked in. The networks themselves
(backbone, neck, heads) are the model's own modules, called as mmdet calls them.

The input is one image, resized and normalised as the config's test pipeline and data
preprocessor do, *not* padded: the graph pads it to the preprocessor's ``pad_size_divisor``
and clips boxes to the unpadded size, as mmdet does with ``img_shape``. Boxes come out in the
input's pixels; dividing by the resize's scale factor gives the original image's.
"""
import math
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import nms as torchvision_nms
from torchvision.ops import roi_align as torchvision_roi_align


class ExportError(ValueError):
    """A config, part or size the exporter cannot handle; the message says why."""


def pad_to_multiple(inputs: torch.Tensor, divisor: int) -> torch.Tensor:
    """Zero-pad the bottom and right to a multiple of ``divisor``, after normalisation, as
    mmdet's data preprocessor pads a batch (``pad_value=0``)."""
    if divisor <= 1:
        return inputs
    height, width = inputs.shape[-2:]
    return F.pad(inputs, (0, (divisor - width % divisor) % divisor,
                          0, (divisor - height % divisor) % divisor))


def image_size(inputs: torch.Tensor) -> torch.Tensor:
    """The input's (width, height, width, height) as a tensor of its dtype, which clamps boxes
    in the graph (the sizes stay symbolic in a dynamic export)."""
    height, width = inputs.shape[-2:]
    size = [torch.full((), side, device=inputs.device) for side in (width, height)]
    return torch.stack(size * 2).to(inputs.dtype)


def decode_deltas(coder, priors: torch.Tensor, deltas: torch.Tensor,
                  limits: torch.Tensor) -> torch.Tensor:
    """mmdet's ``DeltaXYWHBBoxCoder.decode``: ``priors`` (N, 4) and ``deltas`` (N, K * 4) to
    boxes (N, K, 4), clipped to ``limits`` (x, y, x, y maxima) when the coder clips."""
    count = priors.shape[0]
    deltas = deltas.reshape(count, -1, 4)
    deltas = deltas * deltas.new_tensor(coder.stds) + deltas.new_tensor(coder.means)
    centres = ((priors[:, :2] + priors[:, 2:]) * 0.5)[:, None]
    sizes = (priors[:, 2:] - priors[:, :2])[:, None]
    shift = sizes * deltas[..., :2]
    max_ratio = abs(math.log(16 / 1000))  # the coder's default wh_ratio_clip
    if coder.add_ctr_clamp:
        shift = shift.clamp(min=-coder.ctr_clamp, max=coder.ctr_clamp)
        scale = deltas[..., 2:].clamp(max=max_ratio)
    else:
        scale = deltas[..., 2:].clamp(min=-max_ratio, max=max_ratio)
    centres = centres + shift
    sizes = sizes * scale.exp()
    boxes = torch.cat([centres - sizes * 0.5, centres + sizes * 0.5], dim=-1)
    if coder.clip_border:
        boxes = torch.minimum(boxes.clamp(min=0), limits)
    return boxes


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor,
                iou_threshold: float) -> torch.Tensor:
    """NMS within each group, as ``mmcv.ops.batched_nms``: the groups' boxes are moved apart by
    the largest coordinate plus one, then one NMS runs. Returns the kept indices, highest
    score first; none for no boxes."""
    largest = torch.cat([boxes.reshape(-1), boxes.new_zeros(1)]).max()  # defined when empty
    offsets = groups.to(boxes) * (largest + 1)
    return torchvision_nms(boxes + offsets[:, None], scores, iou_threshold)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ExportError(message)


def _nms_iou(cfg, where: str) -> float:
    nms = cfg.get('nms') or {}
    _check(nms.get('type', 'nms') == 'nms' and not nms.get('class_agnostic', False),
           f'{where}.nms={dict(nms)}: only type="nms" per class exports (torchvision.ops.nms)')
    return float(nms['iou_threshold'])


class RoIFeatures(nn.Module):
    """mmdet's ``SingleRoIExtractor`` with torchvision's ``roi_align``: each RoI is pooled from
    every level and the level ``map_roi_levels`` assigns is gathered (no per-level index lists,
    whose sizes depend on the data)."""

    def __init__(self, extractor: nn.Module) -> None:
        super().__init__()
        _check(type(extractor).__name__ == 'SingleRoIExtractor',
               f'{type(extractor).__name__}: only SingleRoIExtractor exports')
        layer = extractor.roi_layers[0]
        _check(type(layer).__name__ == 'RoIAlign' and getattr(layer, 'pool_mode', 'avg') == 'avg',
               f'{type(layer).__name__}: only RoIAlign with pool_mode="avg" exports')
        self.extractor = extractor
        self.output_size = tuple(layer.output_size)
        self.sampling_ratio = int(layer.sampling_ratio)
        self.aligned = bool(layer.aligned)
        self.strides = [int(s) for s in extractor.featmap_strides]

    def forward(self, feats: Sequence[torch.Tensor], boxes: torch.Tensor) -> torch.Tensor:
        rois = torch.cat([boxes.new_zeros(boxes.shape[0], 1), boxes], dim=1)
        pooled = torch.stack([
            torchvision_roi_align(feat, rois, self.output_size, 1.0 / stride,
                                  self.sampling_ratio, self.aligned)
            for feat, stride in zip(feats, self.strides)])  # (levels, N, C, h, w)
        if len(self.strides) == 1:
            return pooled[0]
        levels = self.extractor.map_roi_levels(rois, len(self.strides))
        return pooled[levels, torch.arange(rois.shape[0], device=rois.device)]


class TwoStageDetectorPath(nn.Module):
    """mmdet Faster R-CNN / Mask R-CNN, whole: image -> ``boxes`` (N, 4) in input pixels,
    ``scores`` (N,), ``labels`` (N,), and for Mask R-CNN ``masks`` (N, h, w), each box's mask
    probabilities at the mask head's RoI size (the paste into the image and the
    ``mask_thr_binary`` threshold are the caller's)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        rpn, roi = model.rpn_head, model.roi_head
        for name, head in (('rpn_head', rpn), ('roi_head.bbox_head', roi.bbox_head)):
            _check(type(head.bbox_coder).__name__ == 'DeltaXYWHBBoxCoder',
                   f'{name}: {type(head.bbox_coder).__name__} does not export, only '
                   f'DeltaXYWHBBoxCoder')
        _check(type(roi).__name__ == 'StandardRoIHead',
               f'{type(roi).__name__}: only StandardRoIHead exports')
        _check(rpn.use_sigmoid_cls, 'rpn_head: only sigmoid objectness exports')
        _check(not roi.bbox_head.custom_cls_channels,
               'roi_head.bbox_head: only a softmax classifier exports')
        rpn_cfg, rcnn_cfg = rpn.test_cfg, roi.test_cfg
        self.pad_divisor = int(getattr(model.data_preprocessor, 'pad_size_divisor', 1))
        # read once: the graph follows these and the file's metadata reports them
        self.settings = dict(
            rpn_nms_pre=int(rpn_cfg.get('nms_pre', -1)),
            rpn_min_bbox_size=float(rpn_cfg.get('min_bbox_size', -1)),
            rpn_nms_iou=_nms_iou(rpn_cfg, 'test_cfg.rpn'),
            rpn_max_per_img=int(rpn_cfg.max_per_img),
            score_thr=float(rcnn_cfg.score_thr), nms_iou=_nms_iou(rcnn_cfg, 'test_cfg.rcnn'),
            max_per_img=int(rcnn_cfg.max_per_img), pad_size_divisor=self.pad_divisor)
        self.box_features = RoIFeatures(roi.bbox_roi_extractor)
        self.with_mask = roi.with_mask
        if self.with_mask:
            _check(not roi.share_roi_extractor, 'a shared RoI extractor does not export')
            self.mask_features = RoIFeatures(roi.mask_roi_extractor)
            self.settings['mask_thr_binary'] = float(rcnn_cfg.mask_thr_binary)
        self.output_names = ['boxes', 'scores', 'labels'] + (['masks'] if self.with_mask else [])

    def test_settings(self) -> Dict[str, object]:
        """What the graph bakes in from the config's ``test_cfg``."""
        return dict(self.settings)

    def proposals(self, feats: List[torch.Tensor], limits: torch.Tensor) -> torch.Tensor:
        """The RPN's boxes for one image after its NMS, as ``RPNHead.predict_by_feat``."""
        rpn = self.model.rpn_head
        cls_scores, bbox_preds = rpn(feats)
        priors = rpn.prior_generator.grid_priors(
            [score.shape[-2:] for score in cls_scores], device=cls_scores[0].device)
        nms_pre = self.settings['rpn_nms_pre']
        level_scores, level_deltas, level_priors, level_ids = [], [], [], []
        for level, (score, delta, prior) in enumerate(zip(cls_scores, bbox_preds, priors)):
            score = score[0].permute(1, 2, 0).reshape(-1).sigmoid()
            delta = delta[0].permute(1, 2, 0).reshape(-1, 4)
            if nms_pre > 0:
                score, keep = score.topk(torch.sym_min(nms_pre, score.shape[0]))
                delta, prior = delta[keep], prior[keep]
            level_scores.append(score)
            level_deltas.append(delta)
            level_priors.append(prior)
            level_ids.append(torch.full_like(score, level, dtype=torch.long))
        scores, ids = torch.cat(level_scores), torch.cat(level_ids)
        boxes = decode_deltas(rpn.bbox_coder, torch.cat(level_priors), torch.cat(level_deltas),
                              limits)[:, 0]
        min_size = self.settings['rpn_min_bbox_size']
        if min_size >= 0:
            sizes = boxes[:, 2:] - boxes[:, :2]
            valid = torch.nonzero((sizes > min_size).all(dim=1))[:, 0]
            boxes, scores, ids = boxes[valid], scores[valid], ids[valid]
        keep = batched_nms(boxes, scores, ids, self.settings['rpn_nms_iou'])
        keep = keep[:self.settings['rpn_max_per_img']]
        return boxes[keep]

    def detect(self, feats: List[torch.Tensor], proposals: torch.Tensor,
               limits: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The box head on the proposals, then per-class NMS, as ``BBoxHead.predict_by_feat``
        with ``multiclass_nms``."""
        head = self.model.roi_head.bbox_head
        cls_score, bbox_pred = head(self.box_features(feats, proposals))
        scores = F.softmax(cls_score, dim=-1)[:, :-1]  # (N, classes), background dropped
        boxes = decode_deltas(head.bbox_coder, proposals, bbox_pred, limits)
        boxes = boxes.expand(-1, scores.shape[1], 4)  # one box for all classes if agnostic
        labels = torch.arange(scores.shape[1], device=scores.device).expand_as(scores)
        boxes, scores, labels = boxes.reshape(-1, 4), scores.reshape(-1), labels.reshape(-1)
        valid = torch.nonzero(scores > self.settings['score_thr'])[:, 0]
        boxes, scores, labels = boxes[valid], scores[valid], labels[valid]
        keep = batched_nms(boxes, scores, labels, self.settings['nms_iou'])
        keep = keep[:self.settings['max_per_img']]
        return boxes[keep], scores[keep], labels[keep]

    def masks(self, feats: List[torch.Tensor], boxes: torch.Tensor,
              labels: torch.Tensor) -> torch.Tensor:
        """Each box's mask probabilities for its label, at the mask head's size."""
        logits = self.model.roi_head.mask_head(self.mask_features(feats, boxes))
        if logits.shape[1] > 1:  # one mask per class; class-agnostic heads have one
            logits = logits[torch.arange(boxes.shape[0], device=boxes.device), labels]
        else:
            logits = logits[:, 0]
        return logits.sigmoid()

    def forward(self, inputs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        limits = image_size(inputs)
        feats = list(self.model.extract_feat(pad_to_multiple(inputs, self.pad_divisor)))
        boxes, scores, labels = self.detect(feats, self.proposals(feats, limits), limits)
        if not self.with_mask:
            return boxes, scores, labels
        return boxes, scores, labels, self.masks(feats, boxes, labels)


class DETRPath(nn.Module):
    """mmdet DETR, whole: image -> ``boxes`` (N, 4) in input pixels, ``scores``, ``labels``
    for the ``max_per_img`` best queries, as ``DETRHead.predict_by_feat``. mmdet builds the
    padding mask from each data sample's ``img_shape``; here the one image's shape is the
    input's, so the data samples are made from it inside the graph."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        _check(type(model).__name__ == 'DETR',
               f'{type(model).__name__}: of the DETR family only DETR itself exports')
        _check(not model.bbox_head.loss_cls.use_sigmoid,
               'bbox_head: only a softmax classifier exports')
        self.model = model
        self.pad_divisor = int(getattr(model.data_preprocessor, 'pad_size_divisor', 1))
        self.max_per_img = int(model.bbox_head.test_cfg.get('max_per_img', model.num_queries))
        self.output_names = ['boxes', 'scores', 'labels']

    def test_settings(self) -> Dict[str, object]:
        return dict(max_per_img=self.max_per_img, pad_size_divisor=self.pad_divisor)

    def forward(self, inputs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        from mmdet.structures import DetDataSample

        height, width = inputs.shape[-2:]
        padded = pad_to_multiple(inputs, self.pad_divisor)
        sample = DetDataSample(metainfo=dict(img_shape=(height, width),
                                             batch_input_shape=tuple(padded.shape[-2:])))
        feats = self.model.extract_feat(padded)
        hidden = self.model.forward_transformer(feats, [sample])['hidden_states']
        cls_scores, box_preds = self.model.bbox_head(hidden)
        scores, labels = F.softmax(cls_scores[-1][0], dim=-1)[:, :-1].max(-1)
        scores, best = scores.topk(self.max_per_img)
        centre, size = box_preds[-1][0][best].split(2, dim=-1)
        limits = image_size(inputs)
        boxes = torch.cat([centre - size * 0.5, centre + size * 0.5], dim=-1) * limits
        return torch.minimum(boxes.clamp(min=0), limits), scores, labels[best]
