"""Score a candidate's outputs against the reference's, each metric a :class:`Check` against its tolerance.

* per output: max abs / max rel error, cosine similarity, new non-finite values;
* classifiers: top-1 agreement; detectors: decoded-box agreement (:mod:`attn_deploy.validate.detection`).

Every metric is reported. A metric whose tolerance is ``None`` is not a gate: its check says "not checked",
never counts for or against the verdict, and carries a warning when it is far off (:data:`FAR_OFF`), so a
PASSED never hides a 0% box agreement behind silence.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from attn_deploy.config import Tolerances
from attn_deploy.markdown import fmt
from attn_deploy.parity import ParityReport, compare_outputs
from attn_deploy.validate.classification import top1_agreement
from attn_deploy.validate.detection import anchor_box_agreement, box_agreement

FAR_OFF = {
    "top-1 agreement": 0.9,
    "box agreement": 0.5,
    "anchor box agreement": 0.5,
    "max rel error": 0.1,
}
"""Where a metric that is not a gate gets a warning: agreements below, errors above (max rel: 10% of the
output's largest magnitude). Untrained zoo weights land here under INT8 (flat logits, YOLO scores ~1e-4)."""


@dataclass(frozen=True)
class Check:
    """One metric against its tolerance; ``limit=None``: reported, not checked (never fails)."""

    metric: str
    value: float
    limit: float | None
    op: str  # ">=" or "<="

    @property
    def gated(self) -> bool:
        """Whether this metric decides the verdict."""
        return self.limit is not None

    @property
    def passed(self) -> bool:
        """Whether ``value op limit`` holds (NaN never passes); a metric that is not a gate never fails."""
        if self.limit is None:
            return True
        return bool(self.value >= self.limit if self.op == ">=" else self.value <= self.limit)

    @property
    def result(self) -> str:
        """``pass``, ``FAIL`` or ``not checked``."""
        if not self.gated:
            return "not checked"
        return "pass" if self.passed else "FAIL"

    def show(self, number: float) -> str:
        """A value or limit of this metric as people read it: cosine to 7 decimals, agreements in percent."""
        if self.metric == "cosine":
            return f"{number:.7f}"
        if "agreement" in self.metric:
            return f"{number:.1%}"
        return fmt(number)

    @property
    def tolerance(self) -> str:
        """The gate as people read it (``>= 99.0%``, in the value's own unit), or ``-`` for a metric that is
        not a gate."""
        return "-" if self.limit is None else f"{self.op} {self.show(self.limit)}"

    @property
    def far_off(self) -> bool:
        """A metric that is not a gate lies beyond :data:`FAR_OFF` (NaN too): worth a warning."""
        edge = FAR_OFF.get(self.metric)
        if self.gated or edge is None:
            return False
        return not (self.value >= edge if self.op == ">=" else self.value <= edge)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: the fields, ``gate``, ``result``, ``passed`` (``None`` when not a gate), ``far_off``."""
        return {
            **asdict(self),
            "gate": self.gated,
            "result": self.result,
            "passed": self.passed if self.gated else None,
            "far_off": self.far_off,
        }


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
    checks = [
        Check("cosine", parity.cosine, tol.cosine, ">="),
        Check("max abs error", parity.max_abs, tol.max_abs, "<="),
        Check("max rel error", parity.max_rel, tol.max_rel, "<="),
    ]
    checks.append(Check("new non-finite values", sum(p.nonfinite for p in parity.per_output), 0, "<="))
    details: dict[str, Any] = {}
    first = names[0]
    if task == "classify":
        details["top1_agreement"] = top1_agreement(reference[first], candidate[first])
        checks.append(Check("top-1 agreement", details["top1_agreement"], tol.top1, ">="))
    elif task == "detect":
        boxes = box_agreement(reference[first], candidate[first], iou=tol.box_iou)
        details["boxes"] = boxes.to_dict()
        details["anchor_box_agreement"] = anchor_box_agreement(
            reference[first], candidate[first], iou=tol.box_iou
        )
        checks.append(Check("box agreement", boxes.agreement, tol.box_agreement, ">="))
        checks.append(
            Check("anchor box agreement", details["anchor_box_agreement"], tol.anchor_box_agreement, ">=")
        )
    return parity, checks, details


def per_output_rows(parity: ParityReport) -> list[dict[str, Any]]:
    """Name, max abs / rel error, cosine and new non-finite count of each output."""
    keep = ("name", "max_abs", "max_rel", "cosine", "nonfinite")
    return [{k: v for k, v in asdict(p).items() if k in keep} for p in parity.per_output]
