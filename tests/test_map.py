"""Detection mAP (issue 11): hand-made cases, pycocotools on random predictions, and the yolo-val postprocess."""

from __future__ import annotations

import numpy as np
import pytest

from attn_deploy.validate.detection import Detections
from attn_deploy.validate.detection_map import GroundTruth, evaluate_detections
from attn_deploy.validate.postprocess import postprocess


def dets(boxes: list[list[float]], scores: list[float], classes: list[int]) -> Detections:
    return Detections(
        np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        np.asarray(scores, dtype=np.float64),
        np.asarray(classes, dtype=np.int64),
    )


def truth(rows: list[list[float]]) -> GroundTruth:
    return GroundTruth.from_rows(np.asarray(rows, dtype=np.float64).reshape(-1, 5))


def test_perfect_predictions_score_one() -> None:
    gt = truth([[0, 10, 10, 50, 50], [1, 100, 100, 300, 300]])
    pred = dets([[10, 10, 50, 50], [100, 100, 300, 300]], [0.9, 0.8], [0, 1])
    m = evaluate_detections([pred], [gt], 2)
    # precision is tp / (tp + fp + eps) as in pycocotools: 1 within 1e-12
    assert m.map50 == pytest.approx(1.0) and m.map50_95 == pytest.approx(1.0)
    assert m.ap_medium == pytest.approx(1.0) and m.ap_large == pytest.approx(1.0)
    assert np.isnan(m.ap_small)  # no small ground truth: not a zero
    assert m.precision == pytest.approx(1.0) and m.recall == pytest.approx(1.0)


def test_half_recall_and_iou_between_thresholds() -> None:
    # class 0: one of two boxes found -> AP = 51 of 101 recall points at precision 1
    gt = truth([[0, 0, 0, 40, 40], [0, 100, 100, 140, 140]])
    m = evaluate_detections([dets([[0, 0, 40, 40]], [0.9], [0])], [gt], 1)
    assert m.map50 == pytest.approx(51 / 101)
    # IoU 0.8 counts at thresholds 0.50..0.80 (7 of 10)
    gt = truth([[0, 0, 0, 100, 100]])
    m = evaluate_detections([dets([[0, 0, 100, 80]], [0.9], [0])], [gt], 1)
    assert m.map50 == pytest.approx(1.0) and m.map50_95 == pytest.approx(0.7)


def test_wrong_class_and_duplicates_are_false_positives() -> None:
    gt = truth([[0, 0, 0, 50, 50]])
    # a higher-scored duplicate of the wrong class does not count; a lower duplicate is a false positive
    pred = dets([[0, 0, 50, 50], [0, 0, 50, 50], [1, 1, 50, 50]], [0.95, 0.9, 0.5], [1, 0, 0])
    m = evaluate_detections([pred], [gt], 2)
    assert m.per_class[0] == pytest.approx(1.0) and np.isnan(m.per_class[1])  # class 1: no ground truth
    assert m.map50 == pytest.approx(1.0)


def random_case(
    rng: np.random.Generator, images: int, classes: int
) -> tuple[list[Detections], list[GroundTruth]]:
    """Ground truth of many sizes, predictions near it (jittered, duplicated, some wrong class) and noise."""
    preds, truths = [], []
    for _ in range(images):
        n = int(rng.integers(0, 8))
        size = np.exp(rng.uniform(np.log(6), np.log(200), n))
        xy = rng.uniform(0, 400, (n, 2))
        gt_boxes = np.concatenate([xy, xy + size[:, None] * rng.uniform(0.6, 1.4, (n, 2))], 1)
        gt_cls = rng.integers(0, classes, n)
        rows, pcls = [], []
        for box, c in zip(gt_boxes, gt_cls, strict=True):
            for _ in range(int(rng.integers(0, 3))):
                wh = box[2:] - box[:2]
                rows.append(box + rng.normal(0, 0.12, 4) * np.tile(wh, 2))
                pcls.append(c if rng.random() < 0.85 else int(rng.integers(classes)))
        for _ in range(int(rng.integers(0, 5))):
            xy0 = rng.uniform(0, 400, 2)
            rows.append(np.concatenate([xy0, xy0 + rng.uniform(5, 150, 2)]))
            pcls.append(int(rng.integers(classes)))
        boxes = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        scores = rng.uniform(0.001, 1.0, len(boxes)).round(4)  # ties across images happen, as in real runs
        preds.append(Detections(boxes, scores, np.asarray(pcls, dtype=np.int64)))
        truths.append(GroundTruth(gt_boxes, gt_cls))
    return preds, truths


def pycocotools_stats(preds: list[Detections], truths: list[GroundTruth], classes: int) -> dict[str, float]:
    """mAP50-95, mAP50, AP small / medium / large from pycocotools' COCOeval on the same boxes."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, results = [], [], []
    for i, (p, t) in enumerate(zip(preds, truths, strict=True)):
        images.append({"id": i, "width": 640, "height": 640})
        for box, c in zip(t.boxes, t.classes, strict=True):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i,
                    "category_id": int(c),
                    "iscrowd": 0,
                    "bbox": [box[0], box[1], w, h],
                    "area": w * h,
                }
            )
        for box, s, c in zip(p.boxes, p.scores, p.classes, strict=True):
            results.append(
                {
                    "image_id": i,
                    "category_id": int(c),
                    "score": float(s),
                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                }
            )
    coco = COCO()
    coco.dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c} for c in range(classes)],
    }
    coco.createIndex()
    evaluator = COCOeval(coco, coco.loadRes(results), "bbox")
    evaluator.params.maxDets = [1, 10, 300]  # every detection counts, as in ours
    evaluator.evaluate()
    evaluator.accumulate()
    precision = evaluator.eval["precision"][:, :, :, :, -1]  # (T, R, K, A)

    def mean(values: np.ndarray) -> float:
        return float(values[values > -1].mean())

    return {
        "map50_95": mean(precision[:, :, :, 0]),
        "map50": mean(precision[0, :, :, 0]),
        "ap_small": mean(precision[:, :, :, 1]),
        "ap_medium": mean(precision[:, :, :, 2]),
        "ap_large": mean(precision[:, :, :, 3]),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_pycocotools(seed: int, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip(
        "pycocotools", reason="pycocotools is a test-only dependency (pip install -e '.[dev]')"
    )
    preds, truths = random_case(np.random.default_rng(seed), images=25, classes=3)
    ours = evaluate_detections(preds, truths, 3)
    reference = pycocotools_stats(preds, truths, 3)
    capsys.readouterr()  # pycocotools prints progress
    for key, value in reference.items():
        # the same algorithm on the same float64 boxes; 1e-3 is the bound (ties broken identically)
        assert getattr(ours, key) == pytest.approx(value, abs=1e-3), key


def test_postprocess_multilabel_classaware_and_capped() -> None:
    # anchors as (4 + nc, A): xywh then scores; anchor 0 scores for both classes (multi-label)
    output = np.array(
        [
            [50, 52, 200, 50],  # cx
            [50, 50, 200, 50],  # cy
            [20, 20, 30, 20],  # w
            [20, 20, 30, 20],  # h
            [0.9, 0.8, 0.0005, 0.0],  # class 0
            [0.7, 0.0, 0.3, 0.0],  # class 1
        ]
    )
    d = postprocess(output)
    # anchor 1 overlaps anchor 0 (IoU 0.82 > 0.7) in class 0: suppressed; class 1 keeps anchor 0's box;
    # anchor 2's class-0 score is under conf 0.001; anchor 3 scores nothing
    assert sorted(zip(d.classes.tolist(), d.scores.tolist(), strict=True)) == [(0, 0.9), (1, 0.3), (1, 0.7)]
    assert np.allclose(d.boxes[0], [40, 40, 60, 60])
    many = np.zeros((5, 1000))
    many[0] = np.arange(1000) * 50.0  # 1000 disjoint boxes
    many[2:4] = 10.0
    many[4] = np.linspace(0.01, 1, 1000)
    capped = postprocess(many, max_det=300)
    assert len(capped) == 300 and capped.scores.min() == pytest.approx(many[4][700])
