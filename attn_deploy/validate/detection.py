"""YOLO box agreement: decode both outputs, NMS, and match the candidate's boxes to the reference's.

Output layout (Ultralytics YOLOv8 ``Detect`` at export): ``(B, 4 + nc, anchors)`` with ``cx, cy, w, h`` in
input pixels and sigmoid class scores. Decoding keeps anchors whose best class score reaches the threshold,
then class-aware NMS (IoU 0.7, at most 300 boxes), as Ultralytics' ``non_max_suppression`` does.

Agreement: a reference box is matched by an unused candidate box of the same class with IoU >= ``iou``
(greedy, highest reference score first); agreement = matched / max(#reference, #candidate), so missing and
extra boxes both count against it (1.0 when neither has a box).

The threshold: ``conf`` (Ultralytics' 0.25) suits trained weights. The zoo's default weights are untrained,
with class scores around 1e-4 (the detection head's prior bias), so no box reaches 0.25; ``conf=None`` then
uses the score of the reference's ``top_k``-th best anchor, the same threshold for both outputs, so there
are boxes to compare.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

NMS_IOU = 0.7
MAX_DET = 300


@dataclass(frozen=True)
class Detections:
    """Boxes ``(N, 4)`` as x1, y1, x2, y2; scores ``(N,)``; classes ``(N,)``; sorted by score."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


@dataclass(frozen=True)
class BoxAgreement:
    """Matched boxes over all images and the resulting agreement fraction."""

    matched: int
    reference_boxes: int
    candidate_boxes: int
    iou: float
    conf: float

    @property
    def agreement(self) -> float:
        """matched / max(#reference, #candidate); 1.0 when neither output has a box."""
        total = max(self.reference_boxes, self.candidate_boxes)
        return 1.0 if total == 0 else self.matched / total

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, with the agreement."""
        return {**asdict(self), "agreement": self.agreement}


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix ``(len(a), len(b))`` of xyxy boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU, limit: int | None = None) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, highest score first (the first ``limit`` of them).

    The IoU of the kept box against the rest is computed from per-coordinate arrays prepared once (element-wise
    operations only: 10-20x faster than :func:`box_iou` per step on 30000 candidates, the same values).
    """
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (boxes[:, k].astype(np.float64) for k in range(4))
    area = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    keep: list[int] = []
    while order.size and (limit is None or len(keep) < limit):
        best, order = order[0], order[1:]
        keep.append(int(best))
        if order.size:
            w = np.clip(np.minimum(x2[best], x2[order]) - np.maximum(x1[best], x1[order]), 0, None)
            h = np.clip(np.minimum(y2[best], y2[order]) - np.maximum(y1[best], y1[order]), 0, None)
            inter = w * h
            union = area[best] + area[order] - inter
            overlap = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
            order = order[overlap < iou]
    return np.asarray(keep, dtype=np.int64)


def decode(output: np.ndarray, conf: float, iou: float = NMS_IOU, max_det: int = MAX_DET) -> Detections:
    """One image's ``(4 + nc, anchors)`` output -> class-aware NMS detections with score >= ``conf``."""
    xywh, cls_scores = output[:4].T.astype(np.float64), output[4:].T.astype(np.float64)
    classes = cls_scores.argmax(1)
    scores = cls_scores[np.arange(len(classes)), classes]
    mask = scores >= conf
    xywh, scores, classes = xywh[mask], scores[mask], classes[mask]
    boxes = xywh_to_xyxy(xywh)
    offset = boxes + classes[:, None] * (
        boxes.max(initial=0.0) + 1.0
    )  # boxes of different classes never overlap
    keep = nms(offset, scores, iou)[:max_det]
    return Detections(boxes[keep], scores[keep], classes[keep])


def auto_conf(reference: np.ndarray, top_k: int = 100) -> float:
    """The score of the ``top_k``-th best anchor over a batch of reference outputs ``(B, 4 + nc, A)``."""
    best = reference[:, 4:].max(1).ravel()
    k = min(top_k * len(reference), best.size)
    return float(np.partition(best, best.size - k)[best.size - k])


def match(reference: Detections, candidate: Detections, iou: float) -> int:
    """How many reference boxes have an unused same-class candidate box with IoU >= ``iou``."""
    if not len(reference) or not len(candidate):
        return 0
    overlaps = box_iou(reference.boxes, candidate.boxes)
    overlaps[reference.classes[:, None] != candidate.classes[None, :]] = 0.0
    used = np.zeros(len(candidate), dtype=bool)
    matched = 0
    for i in range(len(reference)):  # reference boxes are sorted by score
        row = np.where(used, 0.0, overlaps[i])
        j = int(row.argmax())
        if row[j] >= iou:
            used[j] = True
            matched += 1
    return matched


def box_agreement(
    reference: np.ndarray, candidate: np.ndarray, *, iou: float = 0.9, conf: float | None = None
) -> BoxAgreement:
    """Agreement of decoded boxes between two ``(B, 4 + nc, anchors)`` batches (see the module docstring)."""
    threshold = auto_conf(reference) if conf is None else conf
    matched = n_ref = n_cand = 0
    for ref_out, cand_out in zip(reference, candidate, strict=True):
        ref, cand = decode(ref_out, threshold), decode(cand_out, threshold)
        matched += match(ref, cand, iou)
        n_ref, n_cand = n_ref + len(ref), n_cand + len(cand)
    return BoxAgreement(matched, n_ref, n_cand, iou, threshold)


def anchor_box_agreement(
    reference: np.ndarray, candidate: np.ndarray, *, iou: float = 0.9, top_k: int = 100
) -> float:
    """Fraction of the reference's ``top_k`` best anchors per image whose candidate box has IoU >= ``iou``.

    Class scores play no part: this isolates the box regression rows, which stay meaningful when the scores of
    untrained weights (~1e-4) fall below one INT8 step and no box passes any threshold.
    """
    hits = total = 0
    for ref_out, cand_out in zip(reference, candidate, strict=True):
        k = min(top_k, ref_out.shape[1])
        anchors = np.argsort(-ref_out[4:].max(0), kind="stable")[:k]
        ref_boxes, cand_boxes = xywh_to_xyxy(ref_out[:4, anchors].T), xywh_to_xyxy(cand_out[:4, anchors].T)
        overlaps = box_iou(ref_boxes, cand_boxes).diagonal()
        hits, total = hits + int(np.count_nonzero(overlaps >= iou)), total + k
    return hits / total if total else 1.0


def xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    """``(N, 4)`` centre-size boxes -> corner boxes, float64."""
    xywh = xywh.astype(np.float64)
    return np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], axis=1)
