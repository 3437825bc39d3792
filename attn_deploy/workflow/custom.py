"""Export one's own ``nn.Module`` into a full artifact directory (``model.onnx``, ``manifest.json``,
``report.md``), at any precision: what `attn-deploy export` does for zoo models, for any model.

    from attn_deploy import export_artifact
    artifact, result = export_artifact(model, sample, "engines/my-net/ort-int8", precision="int8")

The artifact serves (`attn-deploy serve`), goes into a Triton repository (`attn-deploy triton-repo`) and
benchmarks like a zoo export. `validate` needs to rebuild the PyTorch model by name, so it takes zoo models
only; the export itself is verified against PyTorch (and an FP16/INT8 graph checked under its config).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from attn_deploy.artifacts import Artifact, check_destination
from attn_deploy.backends.torch_runner import flatten_outputs
from attn_deploy.config import ExportConfig, resolve_export_config
from attn_deploy.data.preprocess import PreprocessSpec
from attn_deploy.errors import ConfigError
from attn_deploy.export.artifact import export_artifact as write_artifact
from attn_deploy.export.pipeline import ExportResult, StageCallback
from attn_deploy.export.request import ExportRequest
from attn_deploy.fsutil import check_name
from attn_deploy.precision.apply import ModelIO, precision_stage


def export_artifact(
    model: nn.Module,
    sample: torch.Tensor,
    out_dir: str | os.PathLike[str],
    *,
    precision: str | None = None,
    config: str | os.PathLike[str] | ExportConfig | None = None,
    name: str | None = None,
    task: str | None = None,
    dynamic_batch: bool = False,
    dynamic_hw: bool = False,
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
    letterbox: bool = False,
    input_name: str = "images",
    output_names: Sequence[str] | None = None,
    calib_dir: str | os.PathLike[str] | None = None,
    on_stage: StageCallback | None = None,
) -> tuple[Artifact, ExportResult]:
    """Export ``model`` at ``sample``'s shape into the artifact directory ``out_dir``, verified against PyTorch.

    ``precision`` (fp32, fp16, int8) picks the ``ort-<precision>`` config, or ``config`` names one (a target
    such as ``trt-fp16``, a YAML path, or an :class:`ExportConfig`); neither: FP32. ``dynamic_hw`` comes with a
    dynamic batch (as `export --dynamic`). ``task`` (``classify``, ``detect`` or ``None``) adds top-1 / box
    agreement to the precision check. Calibration and check images are RGB scaled to 0..1, then
    ``(x - mean) / std`` (resized, or letterboxed with ``letterbox=True``): give the ``mean``/``std`` your model
    was trained with. ``name`` (default: the folder's parent, as in ``engines/<model>/<target>``) is the model
    name of the manifest, `serve` and Triton; outputs are named ``output_names`` (default output0, output1...).
    """
    if precision not in (None, "fp32", "fp16", "int8"):
        raise ConfigError(f"precision must be fp32, fp16 or int8, got {precision!r}")
    if not isinstance(sample, torch.Tensor) or sample.dim() != 4 or sample.shape[1] != 3:
        shape = tuple(sample.shape) if isinstance(sample, torch.Tensor) else type(sample).__name__
        raise ConfigError(f"sample must be an image batch tensor (N, 3, H, W), got {shape}")
    out = check_destination(out_dir)
    name = check_name(name or out.resolve().parent.name, "name")
    if isinstance(config, ExportConfig):
        resolved = config
    else:
        dynamic = dynamic_batch or dynamic_hw
        resolved = resolve_export_config(config, precision, dynamic=dynamic, dynamic_hw=dynamic_hw)
    model = model.eval()
    if output_names is None:
        with torch.inference_mode():
            count = len(flatten_outputs(model(sample)))
        output_names = [f"output{i}" for i in range(count)]
    size = (int(sample.shape[2]), int(sample.shape[3]))
    preprocess = PreprocessSpec("letterbox" if letterbox else "resize_crop", size, tuple(mean), tuple(std))
    io = ModelIO(model, input_name, tuple(output_names), task, preprocess, tuple(sample.shape))
    request = ExportRequest.of(
        name,
        target=resolved.name,
        task=task,
        preprocess=preprocess.to_dict(),
        dynamic_batch=resolved.dynamic.batch,
        dynamic_hw=resolved.dynamic.hw,
        opset=resolved.opset,
        input_names=[input_name],
        output_names=output_names,
    )
    stage = precision_stage(resolved, io, calib_dir, on_stage)
    return write_artifact(model, sample, out, request, on_stage=on_stage, precision_stage=stage)
