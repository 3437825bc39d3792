"""Score a candidate's outputs against the reference's, each metric a :class:`Check` against its tolerance.

* per output: max abs / max rel error, cosine similarity, new non-finite values;
* classifiers: top-1 agreement; detectors: decoded-box agreement (:mod:`attn_deploy.validate.detection`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from attn_deploy.config import Tolerances
from attn_deploy.parity import ParityReport, compare_outputs
from attn_deploy.validate.classification import top1_agreement
from attn_deploy.validate.detection import anchor_box_agreement, box_agreement


@dataclass(frozen=True)
class Check:
    """One metric against its tolerance."""

    metric: str
    value: float
    limit: float
    op: str  # ">=" or "<="

    @property
    def passed(self) -> bool:
        """Whether ``value op limit`` holds (NaN never passes)."""
        return bool(self.value >= self.limit if self.op == ">=" else self.value <= self.limit)


def score(
    reference: dict[str, np.ndarray],
    candidate: dict[str, np.ndarray],
    task: str | None,
    tolerances: Tolerances,
) -> tuple[ParityReport, list[Check], dict[str, Any]]:
    """Parity per output, plus top-1 (classify) or box agreement (detect) on the first output, as checks."""
    names = list(reference)
    tol = tolerances
    parity = compare_outputs(reference, candidate, names, atol=np.inf, min_cosine=tol.cosine)
    checks = [Check("cosine", parity.cosine, tol.cosine, ">=")]
    if tol.max_abs is not None:
        checks.append(Check("max abs error", parity.max_abs, tol.max_abs, "<="))
    if tol.max_rel is not None:
        checks.append(Check("max rel error", parity.max_rel, tol.max_rel, "<="))
    checks.append(Check("new non-finite values", sum(p.nonfinite for p in parity.per_output), 0, "<="))
    details: dict[str, Any] = {}
    first = names[0]
    if task == "classify":
        details["top1_agreement"] = top1_agreement(reference[first], candidate[first])
        if tol.top1 is not None:
            checks.append(Check("top-1 agreement", details["top1_agreement"], tol.top1, ">="))
    elif task == "detect":
        boxes = box_agreement(reference[first], candidate[first], iou=tol.box_iou)
        details["boxes"] = boxes.to_dict()
        details["anchor_box_agreement"] = anchor_box_agreement(
            reference[first], candidate[first], iou=tol.box_iou
        )
        if tol.box_agreement is not None:
            checks.append(Check("box agreement", boxes.agreement, tol.box_agreement, ">="))
    return parity, checks, details


def per_output_rows(parity: ParityReport) -> list[dict[str, Any]]:
    """Name, max abs / rel error, cosine and new non-finite count of each output."""
    keep = ("name", "max_abs", "max_rel", "cosine", "nonfinite")
    return [{k: v for k, v in asdict(p).items() if k in keep} for p in parity.per_output]
