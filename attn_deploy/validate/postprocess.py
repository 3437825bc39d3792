"""Ultralytics' validation postprocess of YOLOv8 outputs: every (anchor, class) over a low score, class-aware NMS.

As ``ultralytics/utils/ops.py`` ``non_max_suppression`` runs under ``yolo val`` (8.x): ``conf`` 0.001,
``multi_label=True`` (an anchor yields one candidate per class whose score reaches ``conf``), at most
``max_nms`` 30000 candidates by score into NMS, NMS per class (boxes offset by ``class * 7680`` so classes
never overlap) at IoU 0.7, at most ``max_det`` 300 boxes kept.
"""

from __future__ import annotations

import numpy as np

from attn_deploy.validate.detection import MAX_DET, NMS_IOU, Detections, nms, xywh_to_xyxy

VAL_CONF = 0.001
MAX_NMS = 30_000
MAX_WH = 7680.0  # Ultralytics' class offset for batched NMS (pixels)


def postprocess(
    output: np.ndarray,
    conf: float = VAL_CONF,
    iou: float = NMS_IOU,
    max_det: int = MAX_DET,
    max_nms: int = MAX_NMS,
) -> Detections:
    """One image's ``(4 + nc, anchors)`` output (``xywh`` in input pixels, class scores) -> detections."""
    scores_all = output[4:]
    cls_idx, anchor_idx = np.nonzero(scores_all >= conf)
    scores = scores_all[cls_idx, anchor_idx].astype(np.float64)
    if scores.size > max_nms:
        top = np.argsort(-scores, kind="stable")[:max_nms]
        cls_idx, anchor_idx, scores = cls_idx[top], anchor_idx[top], scores[top]
    boxes = xywh_to_xyxy(output[:4, anchor_idx].T)
    keep = nms(boxes + cls_idx[:, None] * MAX_WH, scores, iou, limit=max_det)
    return Detections(boxes[keep], scores[keep], cls_idx[keep].astype(np.int64))
