"""Export a zoo model by name, or any loaded model (:mod:`attn_deploy.models.source`), into
``<out_root>/<model>/<target>/``."""

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
from attn_deploy.models import ModelSpec, model_spec
from attn_deploy.models.registry import check_count
from attn_deploy.models.source import LoadedModel, load_zoo
from attn_deploy.precision.apply import ModelIO, precision_stage

SAMPLE_SEED = 1234


def parse_size(imgsz: int | str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``640`` / ``"480,640"`` / ``(480, 640)`` -> (H, W), not yet checked against a model; ``None`` stays."""
    if imgsz is None:
        return None
    if isinstance(imgsz, int):
        return imgsz, imgsz
    if isinstance(imgsz, str):
        parts = [p for p in imgsz.replace("x", ",").split(",") if p.strip()]
        try:
            values = [int(p) for p in parts]
        except ValueError:
            values = []
        if len(values) not in (1, 2):
            raise ConfigError(f"--imgsz {imgsz!r} is not a size; use e.g. 640 or 480,640")
        return values[0], values[-1]
    return int(imgsz[0]), int(imgsz[1])


def parse_imgsz(imgsz: int | str | tuple[int, int] | None, spec: ModelSpec) -> tuple[int, int]:
    """``640`` / ``"480,640"`` / ``(480, 640)`` / ``None`` (the model's default) -> (H, W), checked."""
    size = parse_size(imgsz) or spec.input_size
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
    """Create zoo model ``name`` (``weights``: a state_dict, or an Ultralytics checkpoint's tensors) and export it,
    verified, to ``<out_root>/<canonical name>/<target>/`` (see :func:`export_loaded_model`)."""
    spec = model_spec(name)
    parse_imgsz(imgsz, spec)  # a bad size fails before the model is built
    if on_stage:
        on_stage("build model")
    return export_loaded_model(
        load_zoo(name, weights),
        imgsz=imgsz,
        batch=batch,
        dynamic=dynamic,
        dynamic_hw=dynamic_hw,
        opset=opset,
        out_root=out_root,
        target=target,
        simplify=simplify,
        on_stage=on_stage,
        config=config,
        calib_dir=calib_dir,
    )


def export_loaded_model(
    loaded: LoadedModel,
    *,
    imgsz: int | str | tuple[int, int] | None = None,
    batch: int = 1,
    dynamic: bool = False,
    dynamic_hw: bool | None = None,
    opset: int = 18,
    out_root: str | os.PathLike[str] = "engines",
    target: str = "ort-fp32",
    simplify: bool = True,
    on_stage: StageCallback | None = None,
    config: ExportConfig | None = None,
    calib_dir: str | os.PathLike[str] | None = None,
) -> tuple[Artifact, ExportResult]:
    """Export a loaded model (zoo, Ultralytics checkpoint, trusted checkpoint, factory:
    :mod:`attn_deploy.models.source`), verified, to ``<out_root>/<spec name>/<target>/``; the manifest records
    its ``source``.

    The sample input is a deterministic synthetic image, preprocessed as the model expects.
    ``dynamic`` makes batch, height and width dynamic (``dynamic_hw=False``: the batch alone): without a
    ``config``, the export is ``ort-fp32`` so (:func:`attn_deploy.config.resolve_export_config`) in folder
    ``target``. A ``config`` (export_configs/*.yaml) decides the target name, opset, dynamic axes and
    precision instead (INT8 calibrates on ``calib_dir`` images, or on synthetic ones), and the precision graph
    is checked against PyTorch under its tolerances. The manifest records the config either way (``config``).
    """
    model, spec = loaded.model, loaded.spec
    size = parse_imgsz(imgsz, spec)
    check_count(batch, size, "--batch")
    if config is None:  # a plain FP32 export: ort-fp32 with these axes and opset, in folder ``target``
        config = resolve_export_config(dynamic=dynamic, dynamic_hw=dynamic_hw, opset=opset)
        config = replace_config(config, {"name": target}) if target != config.name else config
    target, opset = config.name, config.opset
    out_dir = check_destination(Path(out_root) / spec.name / check_name(target, "target"))
    check_opset(opset, "--opset")
    sample = spec.normalize(synthetic_images(batch, size, seed=SAMPLE_SEED))
    io = ModelIO(
        model, spec.input_name, spec.output_names, spec.task, spec.preprocessing(size), tuple(sample.shape)
    )
    # every export runs the stage: it records the config; an FP32 config leaves the graph as it is
    stage = precision_stage(config, io, calib_dir, on_stage)
    source = loaded.source
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
        weights=source.get("path") if source.get("kind") == "zoo" else None,
        source=source,
    )
    return export_artifact(model, sample, out_dir, request, on_stage=on_stage, precision_stage=stage)
