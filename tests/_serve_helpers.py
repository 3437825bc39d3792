"""Shared fixtures for the serving tests: a tiny attention-gated CNN exported as a real artifact,
raw v2 request building, and Triton's own ModelConfig proto for parsing config.pbtxt."""

from __future__ import annotations

import http.client
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

INPUT_SHAPE = (3, 16, 16)  # one item, without the batch dimension


class TinyGate(nn.Module):
    """Conv features re-weighted by a sigmoid channel gate (an SE block in miniature); two outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Conv2d(8, 8, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = torch.relu(self.conv(x))
        gated = features * torch.sigmoid(self.fc(features.mean((2, 3), keepdim=True)))
        return gated, gated.mean((2, 3))


class Uint8Head(nn.Module):
    """Raw uint8 pixels in; FP16 scores and the INT64 arg-max out (non-FP32 tensors both ways)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.conv(x.float() / 255.0).mean((2, 3))
        return scores.half(), scores.argmax(1)


def make_artifact(out_dir: Path, *, name: str = "tiny-gate", dynamic_batch: bool = True) -> Path:
    """Export TinyGate with the project's artifact writer into ``out_dir``; returns the directory."""
    from attn_deploy.export.artifact import export_artifact
    from attn_deploy.export.request import ExportRequest

    torch.manual_seed(0)
    export_artifact(
        TinyGate().eval(),
        torch.randn(1, *INPUT_SHAPE),
        out_dir,
        ExportRequest.of(
            name, dynamic_batch=dynamic_batch, input_names=["images"], output_names=["features", "pooled"]
        ),
    )
    return out_dir


def make_uint8_artifact(out_dir: Path, *, name: str = "u8-head") -> Path:
    """Export Uint8Head (dynamic batch, input (B, 3, 8, 8) uint8) into ``out_dir``."""
    from attn_deploy.export.artifact import export_artifact
    from attn_deploy.export.request import ExportRequest

    torch.manual_seed(0)
    export_artifact(
        Uint8Head().eval(),
        torch.randint(0, 256, (1, 3, 8, 8), dtype=torch.uint8),
        out_dir,
        ExportRequest.of(name, dynamic_batch=True, input_names=["images"], output_names=["scores", "label"]),
    )
    return out_dir


class TinyFPN(nn.Module):
    """Five stride-2 convolutions, then the stride-32 map upsampled x2 and concatenated with the stride-16
    one, as YOLO's neck does: ONNX Runtime fails (Concat) unless H and W are multiples of 32."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.ModuleList(nn.Conv2d(3 if i == 0 else 4, 4, 3, stride=2, padding=1) for i in range(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = []
        for conv in self.down:
            x = torch.relu(conv(x))
            features.append(x)
        up = nn.functional.interpolate(features[-1], scale_factor=2.0, mode="nearest")
        return torch.cat([up, features[-2]], 1).mean((2, 3))


def make_fpn_artifact(out_dir: Path, *, name: str = "tiny-fpn", preprocess: dict | None = None) -> Path:
    """Export TinyFPN (dynamic batch, height and width; exported at 64x64) with ``preprocess`` in its
    manifest (e.g. ``{"kind": "letterbox", "size": [64, 64], "stride": 32}``; None: an old manifest)."""
    from attn_deploy.export.artifact import export_artifact
    from attn_deploy.export.request import ExportRequest

    torch.manual_seed(0)
    export_artifact(
        TinyFPN().eval(),
        torch.randn(1, 3, 64, 64),
        out_dir,
        ExportRequest.of(
            name,
            preprocess=preprocess,
            dynamic_batch=True,
            dynamic_hw=True,
            input_names=["images"],
            output_names=["pooled"],
        ),
    )
    return out_dir


def onnx_reference(artifact_dir: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    """Run the artifact's model.onnx directly in ONNX Runtime (the ground truth for served outputs)."""
    session = ort.InferenceSession(str(artifact_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"images": images}), strict=True))


def raw_request(
    inputs: dict[str, np.ndarray], *, binary: bool, datatype: str = "FP32", outputs: list[dict] | None = None
) -> tuple[bytes, dict[str, str]]:
    """A v2 inference request body and headers, built by hand (to send malformed variants too)."""
    header: dict = {"inputs": []}
    tail = b""
    for name, array in inputs.items():
        entry: dict = {"name": name, "shape": list(array.shape), "datatype": datatype}
        if binary:
            raw = array.tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            tail += raw
        else:
            entry["data"] = array.ravel().tolist()
        header["inputs"].append(entry)
    if outputs is not None:
        header["outputs"] = outputs
    head = json.dumps(header).encode()
    headers = {"Content-Type": "application/octet-stream"}
    if binary:
        headers["Inference-Header-Content-Length"] = str(len(head))
    return head + tail, headers


_MODEL_CONFIG_PB2: ModuleType | None = None


def http_request(
    port: int, method: str, path: str, body: bytes = b"", headers: dict | None = None
) -> tuple[int, bytes, dict[str, str]]:
    """One plain HTTP request to 127.0.0.1:``port``: status, body and headers (no client library in between)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        conn.close()


def triton_model_config_pb2() -> ModuleType:
    """Triton's ``model_config_pb2`` as shipped inside tritonclient (loaded without the grpc package)."""
    global _MODEL_CONFIG_PB2
    if _MODEL_CONFIG_PB2 is None:
        import tritonclient

        path = Path(tritonclient.__file__).parent / "grpc" / "model_config_pb2.py"
        spec = importlib.util.spec_from_file_location("_triton_model_config_pb2", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        _MODEL_CONFIG_PB2 = module
    return _MODEL_CONFIG_PB2
