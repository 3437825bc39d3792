"""Export a zoo model by name into ``<out_root>/<model>/<target>/``."""

from __future__ import annotations

import os
from pathlib import Path

from attn_deploy.artifacts import Artifact, check_destination
from attn_deploy.config import ExportConfig, check_opset, replace_config, resolve_export_config
from attn_deploy.data.synthetic import synthetic_images
from attn_deploy.errors import ConfigError
from attn_deploy.export.artifact import export_artifact
from attn_deploy.export.pipeline import ExportResult, StageCallback
from attn_deploy.export.request import ExportRequest
from attn_deploy.fsutil import check_name
from attn_deploy.models import ModelSpec, create_model, model_spec
from attn_deploy.models.registry import check_count
from attn_deploy.precision.apply import ModelIO, precision_stage

SAMPLE_SEED = 1234


def parse_imgsz(imgsz: int | str | tuple[int, int] | None, spec: ModelSpec) -> tuple[int, int]:
    """``640`` / ``"480,640"`` / ``(480, 640)`` / ``None`` (the model's default) -> (H, W), checked."""
    if imgsz is None:
        size = spec.input_size
    elif isinstance(imgsz, int):
        size = (imgsz, imgsz)
    elif isinstance(imgsz, str):
        parts = [p for p in imgsz.replace("x", ",").split(",") if p.strip()]
        try:
            values = [int(p) for p in parts]
        except ValueError:
            values = []
        if len(values) not in (1, 2):
            raise ConfigError(f"--imgsz {imgsz!r} is not a size; use e.g. 640 or 480,640")
        size = (values[0], values[-1])
    else:
        size = (int(imgsz[0]), int(imgsz[1]))
    spec.check_size(*size)
    return size


def export_zoo_model(
    name: str,
    *,
    imgsz: int | str | tuple[int, int] | None = None,
    batch: int = 1,
    dynamic: bool = False,
    dynamic_hw: bool | None = None,
    opset: int = 18,
    weights: str | os.PathLike[str] | None = None,
    out_root: str | os.PathLike[str] = "engines",
    target: str = "ort-fp32",
    simplify: bool = True,
    on_stage: StageCallback | None = None,
    config: ExportConfig | None = None,
    calib_dir: str | os.PathLike[str] | None = None,
) -> tuple[Artifact, ExportResult]:
    """Create zoo model ``name`` and export it, verified, to ``<out_root>/<canonical name>/<target>/``.

    The sample input is a deterministic synthetic image, preprocessed as the model expects.
    ``dynamic`` makes batch, height and width dynamic (``dynamic_hw=False``: the batch alone): without a
    ``config``, the export is ``ort-fp32`` so (:func:`attn_deploy.config.resolve_export_config`) in folder
    ``target``. A ``config`` (export_configs/*.yaml) decides the target name, opset, dynamic axes and
    precision instead (INT8 calibrates on ``calib_dir`` images, or on synthetic ones), and the precision graph
    is checked against PyTorch under its tolerances. The manifest records the config either way (``config``).
    """
    spec = model_spec(name)
    size = parse_imgsz(imgsz, spec)
    check_count(batch, size, "--batch")
    if config is None:  # a plain FP32 export: ort-fp32 with these axes and opset, in folder ``target``
        config = resolve_export_config(dynamic=dynamic, dynamic_hw=dynamic_hw, opset=opset)
        config = replace_config(config, {"name": target}) if target != config.name else config
    target, opset = config.name, config.opset
    out_dir = check_destination(Path(out_root) / spec.name / check_name(target, "target"))
    check_opset(opset, "--opset")
    if on_stage:
        on_stage("build model")
    model = create_model(name, weights=weights)
    sample = spec.normalize(synthetic_images(batch, size, seed=SAMPLE_SEED))
    io = ModelIO(
        model, spec.input_name, spec.output_names, spec.task, spec.preprocessing(size), tuple(sample.shape)
    )
    # every export runs the stage: it records the config; an FP32 config leaves the graph as it is
    stage = precision_stage(config, io, calib_dir, on_stage)
    request = ExportRequest.of(
        spec.name,
        target=target,
        task=spec.task,
        preprocess=spec.preprocess_info(size),
        dynamic_batch=config.dynamic.batch,
        dynamic_hw=config.dynamic.hw,
        opset=opset,
        simplify=simplify,
        input_names=[spec.input_name],
        output_names=spec.output_names,
        weights=weights,
    )
    return export_artifact(model, sample, out_dir, request, on_stage=on_stage, precision_stage=stage)
