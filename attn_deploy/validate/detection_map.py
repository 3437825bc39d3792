"""Detection accuracy against labels: COCO mAP as pycocotools computes it, plus Ultralytics' P and R.

AP (``pycocotools.cocoeval.COCOeval``, bbox, reproduced step by step; a test compares to pycocotools):

* per image and class, detections by descending score are matched greedily to the unmatched ground-truth
  box of highest IoU >= the threshold, ground truth inside the area range first;
* ground truth outside the area range is ignored (a detection matched to it counts neither way), and so is
  an unmatched detection outside the range;
* per class, detections of all images by score: precision made monotone from the right, read at 101 recall
  points 0, 0.01, .., 1 (0 beyond the last recall reached) and averaged: the AP; mAP is the mean over the
  classes with ground truth in the range; mAP50-95 the mean over IoU thresholds 0.50, 0.55, .., 0.95.

Area ranges are COCO's (small < 32^2 <= medium < 96^2 <= large, box ``w * h``) in the pixels of the evaluated
input (the letterboxed image). Every detection an image has counts (Ultralytics keeps up to 300 after NMS;
pycocotools' default cuts at 100).

Precision and recall are Ultralytics' (``ap_per_class``): at IoU 0.5, each class's precision and recall as
functions of the score threshold, averaged over classes, read at the threshold of the best (smoothed) mean F1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attn_deploy.validate.detection import Detections, box_iou

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
AREA_RANGES = {
    "all": (0.0, 1e10),
    "small": (0.0, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, 1e10),
}


@dataclass(frozen=True)
class GroundTruth:
    """One image's labelled boxes ``(N, 4)`` x1, y1, x2, y2 (input pixels) and classes ``(N,)``."""

    boxes: np.ndarray
    classes: np.ndarray

    @classmethod
    def from_rows(cls, rows: np.ndarray) -> GroundTruth:
        """From ``(N, 5)`` rows ``class, x1, y1, x2, y2``."""
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
        return cls(rows[:, 1:5], rows[:, 0].astype(np.int64))


@dataclass(frozen=True)
class DetectionMetrics:
    """mAP50, mAP50-95, P, R, AP50-95 of small / medium / large boxes (``nan`` without such ground truth),
    AP50-95 per class (``nan`` for a class without ground truth), and the counts."""

    map50: float
    map50_95: float
    precision: float
    recall: float
    ap_small: float
    ap_medium: float
    ap_large: float
    per_class: list[float] = field(default_factory=list)
    images: int = 0
    instances: int = 0

    def to_dict(self, names: list[str] | tuple[str, ...] | None = None) -> dict[str, Any]:
        """JSON-able: the numbers rounded to 5 digits, ``nan`` as ``None``, per-class keyed by name."""
        keys = ("map50", "map50_95", "precision", "recall", "ap_small", "ap_medium", "ap_large")
        out: dict[str, Any] = {k: _json_number(getattr(self, k)) for k in keys}
        labels = list(names) if names is not None else [str(i) for i in range(len(self.per_class))]
        out["per_class_ap50_95"] = {n: _json_number(v) for n, v in zip(labels, self.per_class, strict=False)}
        out["images"], out["instances"] = self.images, self.instances
        return out


def evaluate_detections(
    predictions: list[Detections], truths: list[GroundTruth], num_classes: int
) -> DetectionMetrics:
    """COCO AP and Ultralytics P/R of ``predictions`` against ``truths`` (one entry each per image)."""
    if len(predictions) != len(truths):
        raise ValueError(f"{len(predictions)} predictions for {len(truths)} images")
    ap = {name: np.full((num_classes, len(IOU_THRESHOLDS)), np.nan) for name in AREA_RANGES}
    curves: list[tuple[np.ndarray, np.ndarray, int]] = []  # per class: scores, TP at IoU 0.5, #gt
    for c in range(num_classes):
        per_image = [_image_class(p, t, c) for p, t in zip(predictions, truths, strict=True)]
        for name, area in AREA_RANGES.items():
            ap[name][c] = _class_ap(per_image, area)
        curves.append(_pr_inputs(per_image))
    precision, recall = _best_f1(curves)

    def mean(values: np.ndarray) -> float:
        return float(np.nanmean(values)) if np.any(~np.isnan(values)) else float("nan")

    per_class = [mean(row) for row in ap["all"]]
    return DetectionMetrics(
        map50=mean(ap["all"][:, 0]),
        map50_95=mean(ap["all"].mean(1)),
        precision=precision,
        recall=recall,
        ap_small=mean(ap["small"].mean(1)),
        ap_medium=mean(ap["medium"].mean(1)),
        ap_large=mean(ap["large"].mean(1)),
        per_class=per_class,
        images=len(truths),
        instances=int(sum(len(t.classes) for t in truths)),
    )


@dataclass(frozen=True)
class _ImageClass:
    """One image's detections (sorted by score) and ground truth of one class, with their IoU matrix."""

    scores: np.ndarray
    det_areas: np.ndarray
    gt_areas: np.ndarray
    ious: np.ndarray  # (detections, ground truth)


def _image_class(pred: Detections, truth: GroundTruth, c: int) -> _ImageClass:
    keep = pred.classes == c
    order = np.argsort(-pred.scores[keep], kind="mergesort")
    boxes, scores = pred.boxes[keep][order], pred.scores[keep][order]
    gt = truth.boxes[truth.classes == c]
    return _ImageClass(scores, _areas(boxes), _areas(gt), box_iou(boxes, gt))


def _areas(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _match(item: _ImageClass, area: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, int]:
    """COCOeval.evaluateImg: per IoU threshold, matched ``(T, D)`` and ignored ``(T, D)`` detections, and the
    number of ground-truth boxes not ignored."""
    gt_ignore = (item.gt_areas < area[0]) | (item.gt_areas > area[1])
    gt_order = np.argsort(gt_ignore, kind="mergesort")  # ground truth in range first
    gt_ignore, ious = gt_ignore[gt_order], item.ious[:, gt_order]
    n_det = len(item.scores)
    matched = np.zeros((len(IOU_THRESHOLDS), n_det), dtype=bool)
    ignored = np.zeros((len(IOU_THRESHOLDS), n_det), dtype=bool)
    if ious.size:
        candidates = np.nonzero(ious.max(1) >= IOU_THRESHOLDS[0])[0]  # the only detections that can match
        for t, threshold in enumerate(IOU_THRESHOLDS):
            taken = np.zeros(len(gt_ignore), dtype=bool)
            for d in candidates:
                ok = (~taken) & (ious[d] >= min(threshold, 1 - 1e-10))
                if not ok.any():
                    continue
                pool = ok & ~gt_ignore if (ok & ~gt_ignore).any() else ok  # real ground truth first
                g = _best(ious[d], pool)
                taken[g] = True
                matched[t, d] = True
                ignored[t, d] = gt_ignore[g]
    outside = (item.det_areas < area[0]) | (item.det_areas > area[1])
    ignored |= ~matched & outside[None, :]
    return matched, ignored, int(np.count_nonzero(~gt_ignore))


def _best(row: np.ndarray, pool: np.ndarray) -> int:
    """The ground truth pycocotools picks: highest IoU in ``pool``, the last one on a tie (it replaces on >=)."""
    idx = np.nonzero(pool)[0]
    values = row[idx]
    return int(idx[len(values) - 1 - int(np.argmax(values[::-1]))])


def _class_ap(per_image: list[_ImageClass], area: tuple[float, float]) -> np.ndarray:
    """COCOeval.accumulate for one class and area range: AP per IoU threshold (``nan`` without ground truth)."""
    matches = [_match(item, area) for item in per_image]
    n_gt = sum(m[2] for m in matches)
    if n_gt == 0:
        return np.full(len(IOU_THRESHOLDS), np.nan)
    scores = np.concatenate([item.scores for item in per_image])
    order = np.argsort(-scores, kind="mergesort")
    matched = np.concatenate([m[0] for m in matches], axis=1)[:, order]
    ignored = np.concatenate([m[1] for m in matches], axis=1)[:, order]
    tp = np.cumsum(matched & ~ignored, axis=1, dtype=np.float64)
    fp = np.cumsum(~matched & ~ignored, axis=1, dtype=np.float64)
    out = np.zeros(len(IOU_THRESHOLDS))
    for t in range(len(IOU_THRESHOLDS)):
        if not tp.shape[1]:
            continue
        recall = tp[t] / n_gt
        precision = tp[t] / (tp[t] + fp[t] + np.spacing(1))
        precision = np.maximum.accumulate(precision[::-1])[::-1]  # monotone from the right
        idx = np.searchsorted(recall, RECALL_POINTS, side="left")
        q = np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0)
        out[t] = q.mean()
    return out


def _pr_inputs(per_image: list[_ImageClass]) -> tuple[np.ndarray, np.ndarray, int]:
    """Scores, true-positive flags at IoU 0.5 (area 'all') and the ground-truth count of one class."""
    matches = [_match(item, AREA_RANGES["all"]) for item in per_image]
    scores = np.concatenate([item.scores for item in per_image])
    tp = np.concatenate([m[0][0] for m in matches]) if matches else np.zeros(0, dtype=bool)
    return scores, tp, sum(m[2] for m in matches)


def _best_f1(curves: list[tuple[np.ndarray, np.ndarray, int]]) -> tuple[float, float]:
    """Ultralytics' P and R: class-mean precision and recall at the score threshold of the best mean F1
    (thresholds on a 1000-point grid in 0..1, each class's curves interpolated there)."""
    grid = np.linspace(0, 1, 1000)
    ps, rs = [], []
    for scores, tp, n_gt in curves:
        if n_gt == 0:
            continue
        order = np.argsort(-scores, kind="stable")
        if not order.size:
            ps.append(np.zeros_like(grid))
            rs.append(np.zeros_like(grid))
            continue
        tpc = np.cumsum(tp[order])
        fpc = np.cumsum(~tp[order])
        recall = tpc / (n_gt + 1e-16)
        precision = tpc / (tpc + fpc)
        # np.interp needs increasing x: scores decrease along the curve
        rs.append(np.interp(-grid, -scores[order], recall, left=0))
        ps.append(np.interp(-grid, -scores[order], precision, left=1))
    if not ps:
        return float("nan"), float("nan")
    p, r = np.mean(ps, 0), np.mean(rs, 0)
    f1 = 2 * p * r / (p + r + 1e-16)
    width = 101  # Ultralytics' smooth(f1, 0.1): a box filter over a tenth of the grid, edges repeated
    padded = np.concatenate([np.full(width // 2, f1[0]), f1, np.full(width // 2, f1[-1])])
    best = int(np.argmax(np.convolve(padded, np.ones(width) / width, mode="valid")))
    return float(p[best]), float(r[best])


def _json_number(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 5)
