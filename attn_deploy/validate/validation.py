"""Validate an artifact directory against PyTorch FP32: the check behind `attn-deploy validate`.

The PyTorch model is recreated from the manifest (``model``, optional ``weights``); both run on the same
synthetic images (a seed apart from the INT8 calibration set), or the user's own images (``--image-dir``),
preprocessed as the manifest says. Synthetic raw images are 4:3, so the letterbox pads and the centre-crop
crops, as with real photos. Metrics, each checked against
the target config's ``tolerances``:

* per output: max abs / max rel error, cosine similarity, new non-finite values;
* classifiers: top-1 agreement; detectors: decoded-box agreement (:mod:`attn_deploy.validate.detection`).

Results go to ``validation.json``, a section of ``report.md``, and Polygraphy JSON inputs/outputs
(:mod:`attn_deploy.validate.polygraphy_io`) for re-checking with ``polygraphy run``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attn_deploy import fsutil
from attn_deploy.artifacts import load_artifact
from attn_deploy.backends.base import Runner
from attn_deploy.backends.ort import OrtRunner
from attn_deploy.backends.torch_runner import TorchRunner
from attn_deploy.config import ExportConfig, Tolerances, find_config, load_config, replace_config
from attn_deploy.data.preprocess import PreprocessSpec, list_images, load_image
from attn_deploy.data.synthetic import synthetic_images
from attn_deploy.errors import ConfigError, InputError
from attn_deploy.machine import describe_cpu
from attn_deploy.markdown import fmt, markdown_table
from attn_deploy.models import create_model
from attn_deploy.parity import ParityReport, compare_outputs
from attn_deploy.validate.classification import top1_agreement
from attn_deploy.validate.detection import anchor_box_agreement, box_agreement
from attn_deploy.validate.polygraphy_io import polygraphy_command, save_polygraphy_data

VALIDATION_JSON = "validation.json"
REPORT_MARKER = "<!-- attn-deploy validate -->"


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

    @property
    def passed(self) -> bool:
        """Every check passed."""
        return all(c.passed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``validation.json``)."""
        data = asdict(self)
        data["checks"] = [{**asdict(c), "passed": c.passed} for c in self.checks]
        data["passed"] = self.passed
        return data


def artifact_config(manifest: dict[str, Any]) -> ExportConfig:
    """The artifact's export config: its ``config`` entry, else the config named by its target."""
    if isinstance(manifest.get("config"), dict):
        return replace_config(ExportConfig(), manifest["config"])
    target = str(manifest.get("target", "ort-fp32"))
    try:
        return load_config(find_config(target))
    except ConfigError:
        return load_config(f"ort-{manifest.get('precision', 'fp32')}")


def evaluation_images(preprocess: PreprocessSpec, count: int, seed: int) -> np.ndarray:
    """``count`` synthetic 4:3 images preprocessed for the model: float32 ``(count, 3, H, W)``."""
    h, w = preprocess.size
    return preprocess(synthetic_images(count, (h, w * 4 // 3), seed=seed))


def user_images(
    directory: str | os.PathLike[str], preprocess: PreprocessSpec, limit: int | None, batch: int
) -> np.ndarray:
    """The jpg/png images of ``directory`` (the first ``limit``), preprocessed, in whole batches of ``batch``."""
    files = list_images(directory)
    count = min(len(files), limit or len(files)) // batch * batch
    if count == 0:
        raise InputError(
            f"image directory {directory} holds {len(files)} images, fewer than the export batch {batch}; "
            "add images or export with --dynamic"
        )
    return preprocess([load_image(p) for p in files[:count]])


@dataclass
class Comparison:
    """Outputs of a reference and a candidate runner on the same batches."""

    feeds: list[dict[str, np.ndarray]]
    reference_batches: list[dict[str, np.ndarray]]
    candidate_batches: list[dict[str, np.ndarray]]

    def reference(self) -> dict[str, np.ndarray]:
        """Reference outputs, batches concatenated."""
        return {n: np.concatenate([b[n] for b in self.reference_batches]) for n in self.reference_batches[0]}

    def candidate(self) -> dict[str, np.ndarray]:
        """Candidate outputs as float32, batches concatenated."""
        names = self.candidate_batches[0]
        return {n: np.concatenate([b[n] for b in self.candidate_batches]).astype(np.float32) for n in names}


def compare_runners(
    reference: Runner,
    candidate: Runner,
    input_name: str,
    inputs: np.ndarray,
    batch: int,
    on_batch: Callable[[int, int], None] | None = None,
) -> Comparison:
    """Run both runners over ``inputs`` in batches of ``batch``."""
    result = Comparison([], [], [])
    with reference, candidate:
        for i in range(0, len(inputs), batch):
            feed = {input_name: inputs[i : i + batch]}
            result.feeds.append(feed)
            result.reference_batches.append(reference.infer(feed))
            result.candidate_batches.append(candidate.infer(feed))
            if on_batch:
                on_batch(min(i + batch, len(inputs)), len(inputs))
    return result


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


def validate_artifact(
    directory: str | os.PathLike[str],
    *,
    runner: Runner | None = None,
    config: ExportConfig | None = None,
    num_images: int | None = None,
    seed: int | None = None,
    image_dir: str | os.PathLike[str] | None = None,
    write: bool = True,
    on_batch: Callable[[int, int], None] | None = None,
) -> ValidationReport:
    """Compare the artifact's graph (``runner``, default ONNX Runtime CPU) with PyTorch FP32.

    The inputs are ``num_images`` synthetic images (``seed``), or with ``image_dir`` the user's own jpg/png
    images (all of them, or the first ``num_images``), preprocessed as the manifest says. ``on_batch(done,
    total)`` reports progress. With ``write``, results are stored in the directory.
    """
    start = time.perf_counter()
    artifact = load_artifact(directory)
    manifest = artifact.manifest
    config = config or artifact_config(manifest)
    if not manifest.get("preprocess"):
        raise InputError(
            f"{artifact.dir}: the manifest has no 'preprocess' entry; re-export it with attn-deploy"
        )
    entry = manifest["inputs"][0]
    output_names = [o["name"] for o in manifest["outputs"]]
    batch = entry["shape"][0] if isinstance(entry["shape"][0], int) else config.validation.batch
    preprocess = PreprocessSpec.from_dict(manifest["preprocess"])
    if image_dir is None:
        count = -(-(num_images or config.validation.num_images) // batch) * batch  # whole batches
        seed = config.validation.seed if seed is None else seed
        inputs = evaluation_images(preprocess, count, seed)
        source = f"synthetic images (seed {seed})"
    else:
        inputs = user_images(image_dir, preprocess, num_images, batch)
        count, source = len(inputs), f"images from {image_dir}"

    model = create_model(manifest["model"], weights=manifest.get("weights"))
    candidate_runner = runner or OrtRunner(artifact.onnx_path)
    reference_runner = TorchRunner(model, [entry["name"]], output_names)
    result = compare_runners(reference_runner, candidate_runner, entry["name"], inputs, batch, on_batch)
    parity, checks, details = score(
        result.reference(), result.candidate(), manifest.get("task"), config.tolerances
    )
    report = ValidationReport(
        model=str(manifest["model"]),
        target=str(manifest.get("target", config.name)),
        precision=str(manifest.get("precision", config.precision)),
        backend=getattr(candidate_runner, "name", type(candidate_runner).__name__),
        num_images=count,
        input_shape=[count, *inputs.shape[1:]],
        per_output=per_output_rows(parity),
        checks=checks,
        details={"source": source, **details},
        seconds=round(time.perf_counter() - start, 2),
    )
    if write:
        write_validation(artifact.dir, report, result, artifact.onnx_path.name)
    return report


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


def show_value(check: Check) -> str:
    """A check's value as people read it: cosine to 7 decimals, agreements in percent."""
    if check.metric == "cosine":
        return f"{check.value:.7f}"
    if "agreement" in check.metric:
        return f"{check.value:.1%}"
    return fmt(check.value)


def render_validation(report: ValidationReport, command: str) -> str:
    """The Markdown section: checks with pass/fail, per-output errors, how to reproduce with Polygraphy."""
    verdict = "PASSED" if report.passed else "FAILED"
    lines = [
        f"## Validation against PyTorch FP32: {verdict}\n",
        f"- backend: {report.backend}; {report.num_images} {report.details['source']}, input {report.input_shape}; "
        f"{report.seconds} s\n",
        markdown_table(
            ["metric", "value", "tolerance", "result"],
            [
                [c.metric, show_value(c), f"{c.op} {c.limit:g}", "pass" if c.passed else "FAIL"]
                for c in report.checks
            ],
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
