"""An exported detector's detections against mmdet's ``DetInferencer`` on the same images.

The ONNX file gets exactly the tensor mmdet's test pipeline and data preprocessor give the
model (the image resized and normalised, not padded), so what is compared is the graph, not
two resize implementations. Detections are matched one to one (same label, the closest box),
which tolerates two near-equal scores swapping places.
"""
from typing import Dict, List, Optional, Sequence

import numpy as np

# what "the same detections" means (the export issue's acceptance figures)
BOX_TOLERANCE = 1.0  # pixels of the original image
SCORE_TOLERANCE = 1e-3
MASK_IOU = 0.98


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks; two empty masks agree (1.0)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def match_detections(expected: Dict[str, np.ndarray], got: Dict[str, np.ndarray]) -> dict:
    """Match ``got`` to ``expected`` (dicts of ``boxes`` (N, 4), ``scores``, ``labels``, and
    optionally full-image boolean ``masks``): each expected detection, best score first, takes
    the unmatched detection of its label whose box is closest. Returns the counts, the
    unmatched detections of either side, and the largest box and score differences and the
    smallest mask IoU over the matched pairs."""
    taken = np.zeros(len(got['scores']), dtype=bool)
    box_diff, score_diff, min_iou, unmatched = 0.0, 0.0, 1.0, []
    for i in np.argsort(-np.asarray(expected['scores']), kind='stable'):
        candidates = np.flatnonzero((got['labels'] == expected['labels'][i]) & ~taken)
        if not len(candidates):
            unmatched.append(('expected', int(i)))
            continue
        distance = np.abs(got['boxes'][candidates] - expected['boxes'][i]).max(axis=1)
        j = candidates[np.argmin(distance)]
        taken[j] = True
        box_diff = max(box_diff, float(distance.min()))
        score_diff = max(score_diff, abs(float(got['scores'][j] - expected['scores'][i])))
        if 'masks' in expected and 'masks' in got:
            min_iou = min(min_iou, mask_iou(expected['masks'][i], got['masks'][j]))
    unmatched += [('got', int(j)) for j in np.flatnonzero(~taken)]
    return dict(expected=len(expected['scores']), got=len(got['scores']), unmatched=unmatched,
                max_box_diff=box_diff, max_score_diff=score_diff,
                min_mask_iou=min_iou if 'masks' in expected else None)


def agrees(report: dict) -> bool:
    """The detections are the same within :data:`BOX_TOLERANCE`, :data:`SCORE_TOLERANCE` and
    :data:`MASK_IOU`."""
    return (report['expected'] == report['got'] and not report['unmatched']
            and report['max_box_diff'] <= BOX_TOLERANCE
            and report['max_score_diff'] <= SCORE_TOLERANCE
            and (report['min_mask_iou'] is None or report['min_mask_iou'] >= MASK_IOU))


def compare_with_mmdet(onnx_file: str, config: str, checkpoint: Optional[str],
                       images: Sequence[str]) -> List[dict]:
    """Run ``DetInferencer`` (config, checkpoint, CPU) and the ONNX file on each image, given
    the tensor mmdet's pipeline makes of it; one :func:`match_detections` report per image,
    with ``image`` added. Boxes are compared in the original image's pixels."""
    import onnxruntime as ort
    import torch
    from mmdet.apis import DetInferencer
    from mmdet.models.roi_heads.mask_heads.fcn_mask_head import _do_paste_mask
    from mmengine.dataset import pseudo_collate

    from .onnx_export import read_metadata

    inferencer = DetInferencer(model=config, weights=checkpoint, device='cpu', show_progress=False)
    model = inferencer.model
    session = ort.InferenceSession(onnx_file, providers=['CPUExecutionProvider'])
    mask_threshold = read_metadata(onnx_file).get('test_cfg', {}).get('mask_thr_binary', 0.5)
    reports = []
    for image in images:
        batch = model.data_preprocessor(pseudo_collate([inferencer.pipeline(dict(img_path=image))]),
                                        False)
        sample = batch['data_samples'][0]
        height, width = sample.img_shape
        with torch.no_grad():
            predicted = model.predict(batch['inputs'], batch['data_samples'], rescale=True)
        instances = predicted[0].pred_instances
        expected = dict(boxes=instances.bboxes.numpy(), scores=instances.scores.numpy(),
                        labels=instances.labels.numpy())
        outputs = session.run(None, {'inputs': batch['inputs'][:, :, :height, :width].numpy()})
        scale = np.tile(np.asarray(sample.scale_factor, dtype=np.float32), 2)
        got = dict(boxes=outputs[0] / scale, scores=outputs[1], labels=outputs[2])
        if 'masks' in instances:
            expected['masks'] = instances.masks.numpy().astype(bool)
            ori_h, ori_w = sample.ori_shape
            pasted, _ = _do_paste_mask(torch.from_numpy(outputs[3])[:, None],
                                       torch.from_numpy(got['boxes']), ori_h, ori_w,
                                       skip_empty=False)
            got['masks'] = (pasted >= mask_threshold).numpy()
        reports.append(dict(match_detections(expected, got), image=image))
    return reports
