"""Validate an artifact directory against PyTorch FP32: the check behind `attn-deploy validate`.

The PyTorch model is recreated from the manifest (``model``, optional ``weights``, or its ``source``:
:func:`attn_deploy.models.source.rebuild_model`); both run on the same
synthetic images (a seed apart from the INT8 calibration set), or the user's own images (``--image-dir``),
preprocessed as the manifest says (:mod:`attn_deploy.validate.inputs`). Both runners run batch by batch
(:mod:`attn_deploy.validate.compare`); the outputs are scored against the target config's ``tolerances``
(:mod:`attn_deploy.validate.scoring`), and the results written to the artifact directory
(:mod:`attn_deploy.validate.report`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from attn_deploy.artifacts import REEXPORT, load_artifact
from attn_deploy.backends.base import Runner
from attn_deploy.backends.ort import OrtRunner
from attn_deploy.backends.torch_runner import TorchRunner
from attn_deploy.config import ExportConfig, find_config, load_config, replace_config
from attn_deploy.data.preprocess import PreprocessSpec
from attn_deploy.data.yolo_dataset import DetectionDataset
from attn_deploy.errors import ConfigError, InputError, ModelNotFoundError
from attn_deploy.models.source import rebuild_model
from attn_deploy.validate.compare import compare_runners
from attn_deploy.validate.detection_eval import labelled_inputs, score_outputs
from attn_deploy.validate.inputs import evaluation_images, user_images
from attn_deploy.validate.report import ValidationReport, write_validation
from attn_deploy.validate.scoring import Check, per_output_rows, score


def artifact_config(manifest: dict[str, Any]) -> ExportConfig:
    """The artifact's export config: the one its manifest records (``config``, every export since configs were
    always resolved), else, for an older manifest, the config named by its target."""
    if isinstance(manifest.get("config"), dict):
        return replace_config(ExportConfig(), manifest["config"])
    target = str(manifest.get("target", "ort-fp32"))
    try:
        return load_config(find_config(target))
    except ConfigError:
        return load_config(f"ort-{manifest.get('precision', 'fp32')}")


def reference_model(manifest: dict[str, Any], *, trust: bool = False) -> torch.nn.Module:
    """The model the artifact was exported from, rebuilt as its manifest's source says (PyTorch's side of the
    comparison); an ``InputError`` for an artifact of one's own in-memory model, which validate cannot rebuild."""
    try:
        return rebuild_model(manifest, trust=trust)
    except ModelNotFoundError:
        raise InputError(
            f"'{manifest['model']}' is not a zoo model, so validate cannot rebuild its PyTorch reference; an "
            "artifact of your own model was verified against PyTorch when it was exported (see its report.md)"
        ) from None


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
    trust: bool = False,
    data: str | os.PathLike[str] | None = None,
    max_map_drop: float | None = None,
) -> ValidationReport:
    """Compare the artifact's graph (``runner``, default ONNX Runtime CPU) with PyTorch FP32.

    The inputs are ``num_images`` synthetic images (``seed``), or with ``image_dir`` the user's own jpg/png
    images (all of them, or the first ``num_images``), preprocessed as the manifest says. ``on_batch(done,
    total)`` reports progress. With ``write``, results are stored in the directory. ``trust`` allows rebuilding a
    model whose source runs code (``--trust-checkpoint``, ``--module``): a manifest alone never does.

    With ``data`` (a detector's ``data.yaml``), the inputs are its val images instead, and the report gains
    ``detection``: mAP of PyTorch FP32 (``reference``) and of the artifact (``candidate``) against the labels,
    and their ``drop``; ``max_map_drop`` (mAP50-95, 0..1) adds it as a check.
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
    truths = dataset = None
    if data is not None:
        inputs, truths, dataset = labelled_inputs(data, preprocess, num_images, batch)
        channels = manifest["outputs"][0]["shape"][1] if len(manifest["outputs"][0]["shape"]) == 3 else None
        if isinstance(channels, int) and channels != 4 + dataset.num_classes:
            raise InputError(
                f"{artifact.dir} detects {channels - 4} classes, {data} names {dataset.num_classes}; "
                "pass the data.yaml the model was trained on"
            )
        count, source = len(inputs), f"val images of {data}"
    elif image_dir is None:
        count = -(-(num_images or config.validation.num_images) // batch) * batch  # whole batches
        seed = config.validation.seed if seed is None else seed
        inputs = evaluation_images(preprocess, count, seed)
        source = f"synthetic images (seed {seed})"
    else:
        inputs = user_images(image_dir, preprocess, num_images, batch)
        count, source = len(inputs), f"images from {image_dir}"

    model = reference_model(
        manifest, trust=trust
    )  # as exported: zoo, Ultralytics checkpoint, trusted, factory
    candidate_runner = runner or OrtRunner(artifact.onnx_path)
    reference_runner = TorchRunner(model, [entry["name"]], output_names)
    result = compare_runners(reference_runner, candidate_runner, entry["name"], inputs, batch, on_batch)
    for name in output_names:  # a manifest naming another model: its PyTorch outputs do not fit the graph's
        ref, cand = result.reference()[name], result.candidate()[name]
        if ref.shape != cand.shape:
            raise InputError(
                f"the manifest's model {manifest['model']!r} gives output '{name}' of shape {ref.shape}, "
                f"{artifact.onnx_path.name} {cand.shape}: the manifest describes another model; {REEXPORT}"
            )
    parity, checks, details = score(
        result.reference(), result.candidate(), manifest.get("task"), config.tolerances
    )
    detection = None
    if dataset is not None and truths is not None:
        detection = detection_accuracy(
            result.reference()[output_names[0]], result.candidate()[output_names[0]], truths, dataset
        )
        if max_map_drop is not None:  # no labelled box in the split: NaN, which never passes
            drop = detection["drop"]["map50_95"]
            checks.append(Check("map50_95_drop", float("nan") if drop is None else drop, max_map_drop, "<="))
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
        detection=detection,
    )
    if write:
        write_validation(artifact.dir, report, result, artifact.onnx_path.name)
    return report


def detection_accuracy(
    reference: np.ndarray, candidate: np.ndarray, truths: list[np.ndarray], dataset: DetectionDataset
) -> dict[str, Any]:
    """mAP of both outputs against the labels, and ``drop`` = reference - candidate (mAP50, mAP50-95)."""
    ref = score_outputs(reference, truths, dataset.num_classes).to_dict(dataset.names)
    cand = score_outputs(candidate, truths, dataset.num_classes).to_dict(dataset.names)
    drop = {
        k: None if ref[k] is None or cand[k] is None else round(ref[k] - cand[k], 5)
        for k in ("map50", "map50_95")
    }
    return {"data": str(dataset.yaml_path), "reference": ref, "candidate": cand, "drop": drop}
