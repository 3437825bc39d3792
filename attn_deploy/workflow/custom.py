"""Export one's own ``nn.Module`` into a full artifact directory (``model.onnx``, ``manifest.json``,
``report.md``), at any precision: what `attn-deploy export` does for zoo models, for any model.

    from attn_deploy import export_artifact
    artifact, result = export_artifact(model, sample, "engines/my-net/ort-int8", precision="int8")

The artifact serves (`attn-deploy serve`), goes into a Triton repository (`attn-deploy triton-repo`) and
benchmarks like a zoo export. `validate` needs to rebuild the PyTorch model by name, so it takes zoo models
only; the export itself is verified against PyTorch (and an FP16/INT8 graph checked under its config).
"""

from __future__ import annotations

import math
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
    _check_arguments(model, sample, task, mean, std, dynamic_batch=dynamic_batch, dynamic_hw=dynamic_hw,
                     letterbox=letterbox)  # fmt: skip
    if precision not in (None, "fp32", "fp16", "int8"):
        raise ConfigError(f"precision must be fp32, fp16 or int8, got {precision!r}")
    out = check_destination(out_dir)
    if name is not None and not str(name).strip():
        raise ConfigError("name is empty; give the model a name, or None for the folder's parent")
    name = check_name(name or out.resolve().parent.name, "name")
    dynamic = dynamic_batch or dynamic_hw
    if isinstance(config, ExportConfig):
        if (precision is not None and precision != config.precision) or (
            dynamic and not config.dynamic.batch
        ):
            raise ConfigError(
                f"config {config.name!r} decides precision ({config.precision}) and dynamic shapes; drop "
                "precision=/dynamic_batch=/dynamic_hw=, or pass a config that has them"
            )
        resolved = config
    else:
        resolved = resolve_export_config(config, precision, dynamic=dynamic, dynamic_hw=dynamic_hw)
    if calib_dir is not None and resolved.precision != "int8":
        raise ConfigError(f"calib_dir calibrates INT8; the config {resolved.name!r} is {resolved.precision}")
    model = model.eval()
    if output_names is None:
        # on a copy: a model that writes into its input leaves the caller's alone
        with torch.inference_mode():
            count = len(flatten_outputs(model(sample.detach().clone())))
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


def _check_arguments(
    model: object, sample: object, task: object, mean: object, std: object, **flags: object
) -> None:
    """The arguments, checked before any work: one-line ``ConfigError``s, not a manifest that fails to load."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module instance, got {type(model).__name__}")
    if not (
        isinstance(sample, torch.Tensor) and sample.dim() == 4 and sample.shape[1] == 3 and sample.shape[0]
    ):
        shape = tuple(sample.shape) if isinstance(sample, torch.Tensor) else type(sample).__name__
        raise ConfigError(f"sample must be an image batch tensor (N >= 1, 3, H, W), got {shape}")
    if not sample.is_floating_point():
        raise ConfigError(
            f"sample must be a float tensor (RGB scaled as the model expects), got {sample.dtype}"
        )
    if task not in (None, "classify", "detect"):
        raise ConfigError(f"task must be 'classify', 'detect' or None, got {task!r}")
    for key, values in (("mean", mean), ("std", std)):
        numbers = list(values) if isinstance(values, list | tuple) else []
        ok = len(numbers) == 3 and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in numbers
        )
        if not ok or (key == "std" and min(numbers) <= 0):
            raise ConfigError(f"{key} must be 3 finite numbers (per RGB channel{', > 0' if key == 'std' else ''}), "
                              f"got {values!r}")  # fmt: skip
    for key, value in flags.items():
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be True or False, got {value!r}")
