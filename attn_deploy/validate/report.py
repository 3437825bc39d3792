"""What `attn-deploy validate` found, and where it goes: :class:`ValidationReport`, ``validation.json``,
Polygraphy JSON inputs/outputs of the first batch (:mod:`attn_deploy.validate.polygraphy_io`) for re-checking
with ``polygraphy run``, and the validation section of ``report.md`` (also the sentences the console prints).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from attn_deploy import fsutil
from attn_deploy.machine import describe_cpu
from attn_deploy.markdown import markdown_table
from attn_deploy.validate.compare import Comparison
from attn_deploy.validate.polygraphy_io import polygraphy_command, save_polygraphy_data
from attn_deploy.validate.scoring import Check

VALIDATION_JSON = "validation.json"
REPORT_MARKER = "<!-- attn-deploy validate -->"
GATE_FLAGS = {"top-1 agreement": "--min-top1", "box agreement": "--min-box-agreement"}
"""The `validate` flag that makes a metric a gate (the others: the config's ``tolerances``)."""


@dataclass
class ValidationReport:
    """Everything `attn-deploy validate` measured on one artifact."""

    model: str
    target: str
    precision: str
    backend: str
    num_images: int
    input_shape: list[int]
    per_output: list[dict[str, Any]]
    checks: list[Check]
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    machine: dict[str, Any] = field(default_factory=describe_cpu)  # the CPU whose kernels ran the graph
    detection: dict[str, Any] | None = None  # with --data: mAP of PyTorch FP32 and the artifact (issue 11)

    @property
    def passed(self) -> bool:
        """Every gate passed (metrics that are not gates never fail)."""
        return all(c.passed for c in self.checks)

    @property
    def warnings(self) -> list[str]:
        """A sentence per metric that is not a gate and is far off."""
        return far_off_warnings(self.checks)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``validation.json``)."""
        data = asdict(self)
        data["checks"] = [c.to_dict() for c in self.checks]
        data["passed"] = self.passed
        data["warnings"] = self.warnings
        if self.detection is None:
            del data["detection"]
        return data


def write_validation(folder: Path, report: ValidationReport, result: Comparison, onnx_name: str) -> None:
    """Write ``validation.json``, Polygraphy data of the first batch, and the report.md validation section."""
    save_polygraphy_data(folder, result.feeds[:1], result.reference_batches[:1])
    command = polygraphy_command(onnx_name, report.precision)
    data = report.to_dict()
    data["polygraphy"] = command
    fsutil.write_json(folder / VALIDATION_JSON, data)
    report_path = folder / "report.md"
    previous = report_path.read_text() if report_path.is_file() else ""
    previous = previous.split(REPORT_MARKER)[0].rstrip()
    section = render_validation(report, command)
    fsutil.write_text(report_path, f"{previous}\n\n{REPORT_MARKER}\n{section}" if previous else section)


def far_off_warnings(checks: list[Check]) -> list[str]:
    """A sentence per metric that is not a gate and is far off, naming how to make it one."""
    lines = []
    for c in checks:
        if c.far_off:
            flag = GATE_FLAGS.get(c.metric)
            how = (
                f"`validate {flag}`"
                if flag
                else "the config's `tolerances` (`attn-deploy config TARGET` shows them)"
            )
            lines.append(f"{c.metric} is {show_value(c)}, far off and not checked; to gate it, use {how}.")
    return lines


def show_value(check: Check) -> str:
    """A check's value as people read it: cosine to 7 decimals, agreements in percent."""
    return check.show(check.value)


def render_validation(report: ValidationReport, command: str) -> str:
    """The Markdown section: checks with pass/fail, per-output errors, how to reproduce with Polygraphy."""
    verdict = "PASSED" if report.passed else "FAILED"
    lines = [
        f"## Validation against PyTorch FP32: {verdict}\n",
        f"- backend: {report.backend}; {report.num_images} {report.details['source']}, input {report.input_shape}; "
        f"{report.seconds} s\n",
        markdown_table(
            ["metric", "value", "tolerance", "result"],
            [[c.metric, show_value(c), c.tolerance, c.result] for c in report.checks],
        ),
        markdown_table(
            ["output", "max abs", "max rel", "cosine", "non-finite"],
            [
                [p["name"], p["max_abs"], p["max_rel"], f"{p['cosine']:.7f}", p["nonfinite"]]
                for p in report.per_output
            ],
        ),
    ]
    lines += [line + "\n" for line in agreement_lines(report.details)]
    lines += [f"**Warning:** {w}\n" for w in report.warnings]
    lines.append(f"Reproduce with NVIDIA Polygraphy (first batch):\n\n```\n{command}\n```\n")
    return "\n".join(lines)


def agreement_lines(details: dict) -> list[str]:
    """Sentences on top-1 agreement (classifiers) and box agreement (detectors), for the console and report."""
    lines = []
    if "top1_agreement" in details:
        lines.append(f"Top-1 agreement: {details['top1_agreement']:.1%}.")
    if "boxes" in details:
        b = details["boxes"]
        lines.append(
            f"Box agreement {b['agreement']:.1%}: {b['matched']} of {b['reference_boxes']} PyTorch boxes "
            f"matched by {b['candidate_boxes']} candidate boxes (IoU >= {b['iou']:g}, same class, "
            f"score >= {b['conf']:.3g}). Boxes of PyTorch's 100 best anchors per image kept by the candidate "
            f"(IoU >= {b['iou']:g}, scores aside): {details['anchor_box_agreement']:.1%}."
        )
    return lines
