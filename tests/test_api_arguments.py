"""The public Python API refuses wrong arguments before any work, with the project's one-line errors (a bare
TypeError deep in torch, a manifest that fails to load later, or a silently ignored argument otherwise), and
never writes an opset it does not report."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from attn_deploy import export_artifact, export_onnx
from attn_deploy.config import load_config
from attn_deploy.errors import ConfigError


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean((2, 3))


class WritesInput(Tiny):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.mul_(2)
        return super().forward(x)


SAMPLE = torch.rand(1, 3, 16, 16)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"model": "resnet18-se"}, "model must be a torch.nn.Module instance, got str"),
        ({"sample": SAMPLE.numpy()}, "sample must be a torch.Tensor"),
        ({"sample": torch.rand(0, 3, 16, 16)}, "batch of at least 1"),
        ({"path": ""}, "path must name an .onnx file"),
        ({"path": None}, "path must name an .onnx file"),
        ({"opset": 16}, "17..20"),
        ({"opset": True}, "opset must be an integer"),
        ({"atol": -1.0}, "atol must be a number in 0..inf"),
        ({"min_cosine": 2.0}, "min_cosine must be a number in 0..1"),
        ({"atol": "x"}, "atol must be a number"),
        ({"input_names": ["x"], "output_names": ["x"]}, "must be distinct"),
    ],
)
def test_export_onnx_refuses_bad_arguments_before_any_work(change: dict, needle: str, tmp_path: Path) -> None:
    kwargs = {"model": Tiny(), "sample": SAMPLE, "path": tmp_path / "a.onnx", **change}
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        export_onnx(kwargs.pop("model"), kwargs.pop("sample"), kwargs.pop("path"), **kwargs)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"task": "banana"}, "task must be 'classify', 'detect' or None"),
        ({"std": (0, 0, 0)}, "std must be 3 finite numbers"),
        ({"mean": "abc"}, "mean must be 3 finite numbers"),
        ({"mean": (0.5, 0.5)}, "mean must be 3 finite numbers"),
        ({"dynamic_batch": "no"}, "dynamic_batch must be True or False"),
        ({"letterbox": "no"}, "letterbox must be True or False"),
        ({"name": ""}, "name is empty"),
        ({"calib_dir": "/nonexistent"}, "calib_dir calibrates INT8"),
        ({"config": load_config("ort-fp32"), "precision": "int8"}, "decides precision"),
        ({"config": load_config("ort-fp32"), "dynamic_batch": True}, "decides precision"),
        ({"sample": SAMPLE.to(torch.uint8)}, "sample must be a float tensor"),
    ],
)
def test_export_artifact_refuses_bad_arguments_before_any_work(
    change: dict, needle: str, tmp_path: Path
) -> None:
    kwargs = {"sample": SAMPLE, **change}
    with pytest.raises(ConfigError, match=needle):
        export_artifact(Tiny(), kwargs.pop("sample"), tmp_path / "tiny" / "ort-fp32", **kwargs)
    assert not list(tmp_path.iterdir())


def test_export_artifact_leaves_the_callers_sample_alone(tmp_path: Path) -> None:
    sample = torch.ones(1, 3, 16, 16)
    export_artifact(WritesInput(), sample, tmp_path / "inplace" / "ort-fp32")
    assert float(sample.max()) == 1.0  # its output count was found on the caller's tensor, which doubled it


def test_names_and_channels_of_the_wrong_type_are_one_line() -> None:
    from attn_deploy import create_attention, create_model
    from attn_deploy.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="a model name is a string"):
        create_model(None)  # type: ignore[arg-type]
    with pytest.raises(ModelNotFoundError, match="an attention name is a string"):
        create_attention(5, 16)  # type: ignore[arg-type]
    for channels in ("16", -4, 16.0):
        with pytest.raises(ConfigError, match="channels must be an integer >= 1"):
            create_attention("se", channels)  # type: ignore[arg-type]


def test_an_int8_report_keeps_its_checks_and_calibration(tmp_path: Path) -> None:
    """What the console printed after an INT8 export (the graph's checks, how it was calibrated, what stayed
    float) is in report.md too: it used to hold only the gates' limits."""
    art, _ = export_artifact(Tiny(), SAMPLE, tmp_path / "tiny" / "ort-int8", precision="int8")
    report = (art.dir / "report.md").read_text()
    assert "## INT8 graph checks" in report and "| cosine | " in report and "| pass |" in report
    assert "## INT8 calibration" in report and "| nodes kept float |" in report
