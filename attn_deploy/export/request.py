"""What one artifact export is asked for: :class:`ExportRequest`, built once (by the workflow, or a test) and
passed down :func:`attn_deploy.export.artifact.export_artifact` to :func:`attn_deploy.export.pipeline.export_onnx`
and :func:`attn_deploy.export.manifest.build_manifest`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ExportRequest:
    """The model's identity, the export's options and what the manifest records about them.

    ``target`` names the artifact folder and the manifest's target (a precision stage may set its own);
    ``preprocess`` is the manifest's ``preprocess`` block (:meth:`attn_deploy.models.ModelSpec.preprocess_info`);
    ``weights`` is the state_dict the model was loaded from, recorded so ``validate`` rebuilds the same model;
    ``source`` the provenance of a model not built from the zoo alone (checkpoint sha256, class names, ...).
    """

    model_name: str
    target: str = "ort-fp32"
    task: str | None = None
    preprocess: dict[str, Any] | None = field(default=None, hash=False)
    dynamic_batch: bool = False
    dynamic_hw: bool = False
    opset: int = 18
    simplify: bool = True
    input_names: tuple[str, ...] | None = None
    output_names: tuple[str, ...] | None = None
    weights: str | None = None
    source: dict[str, Any] | None = field(default=None, hash=False)
    """Where the model came from (:mod:`attn_deploy.models.source`): the manifest's ``source`` block."""

    @classmethod
    def of(
        cls,
        model_name: str,
        *,
        input_names: Sequence[str] | None = None,
        output_names: Sequence[str] | None = None,
        weights: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> ExportRequest:
        """A request from plain arguments: name sequences become tuples, ``weights`` an absolute path."""
        return cls(
            model_name,
            input_names=tuple(input_names) if input_names is not None else None,
            output_names=tuple(output_names) if output_names is not None else None,
            weights=str(Path(weights).resolve()) if weights else None,
            **options,
        )

    def onnx_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`attn_deploy.export.pipeline.export_onnx` this request sets."""
        return {
            "dynamic_batch": self.dynamic_batch,
            "dynamic_hw": self.dynamic_hw,
            "opset": self.opset,
            "simplify": self.simplify,
            "input_names": self.input_names,
            "output_names": self.output_names,
        }
