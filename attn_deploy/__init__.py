"""attn-deploy: take CNNs with attention modules from PyTorch to ONNX Runtime and TensorRT, verified.

Public API::

    import torch
    from attn_deploy import create_model, export_artifact, export_onnx

    model = create_model("yolov8n-eca")
    sample = torch.rand(1, 3, 320, 320)  # RGB in 0..1 (YOLO: /255, letterboxed)
    res = export_onnx(model, sample, "out.onnx", dynamic_batch=True, dynamic_hw=True)
    res.path, res.rewrites, res.parity  # a verified bare .onnx
    artifact, res = export_artifact(model, sample, "engines/my-yolo/ort-int8", precision="int8", task="detect")
    artifact.dir  # model.onnx + manifest.json + report.md: `attn-deploy serve` / `triton-repo` take it
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "export_onnx": ("attn_deploy.export.pipeline", "export_onnx"),
    "ExportResult": ("attn_deploy.export.pipeline", "ExportResult"),
    "export_artifact": ("attn_deploy.workflow.custom", "export_artifact"),
    "create_model": ("attn_deploy.models", "create_model"),
    "list_models": ("attn_deploy.models", "list_models"),
    "create_attention": ("attn_deploy.attention", "create_attention"),
    "list_attention": ("attn_deploy.attention", "list_attention"),
}

__all__ = [  # noqa: RUF022 - the lazy names, in _LAZY's order
    "__version__",
    "export_onnx",
    "ExportResult",
    "export_artifact",
    "create_model",
    "list_models",
    "create_attention",
    "list_attention",
]

if TYPE_CHECKING:
    from attn_deploy.attention import create_attention, list_attention
    from attn_deploy.export.pipeline import ExportResult, export_onnx
    from attn_deploy.models import create_model, list_models
    from attn_deploy.workflow.custom import export_artifact


def __getattr__(name: str) -> Any:
    """Import the public API lazily so ``import attn_deploy`` stays cheap."""
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'attn_deploy' has no attribute {name!r}")
