"""The front door (issue 16): verdicts that say what was not checked, `list` without torch, whole tables when
piped, `--version`, exit codes, `--json`, and named dynamic output dims."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from attn_deploy import export_artifact
from attn_deploy.cli import build_parser, main
from attn_deploy.commands.list_models import ZOO_TABLE
from attn_deploy.export.shapes import is_summed_positions
from attn_deploy.markdown import markdown_table
from attn_deploy.models import list_models
from attn_deploy.models.profile import zoo_table
from attn_deploy.validate.report import ValidationReport, render_validation
from attn_deploy.validate.scoring import Check

CLI = [sys.executable, "-m", "attn_deploy.cli"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a fresh interpreter, stdout and stderr piped (not a terminal), ``COLUMNS`` unset."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=120, check=False)


# --- verdicts ---------------------------------------------------------------------------------------------


def test_a_metric_that_is_not_a_gate_says_not_checked_and_warns_when_far_off():
    box = Check("box agreement", 0.0, None, ">=")
    near = Check("top-1 agreement", 0.97, None, ">=")
    assert (box.result, box.passed, box.far_off, box.tolerance) == ("not checked", True, True, "-")
    assert not near.far_off and not Check("box agreement", 0.0, 0.9, ">=").far_off  # a gate FAILs instead
    assert Check("box agreement", float("nan"), None, ">=").far_off
    assert box.to_dict() == {
        "metric": "box agreement",
        "value": 0.0,
        "limit": None,
        "op": ">=",
        "gate": False,
        "result": "not checked",
        "passed": None,
        "far_off": True,
    }
    checks = [Check("cosine", 0.999, 0.99, ">="), box, near]
    report = ValidationReport(
        "yolov8n-eca", "ort-int8", "int8", "ort-cpu", 8, [8, 3, 64, 64], [], checks, {"source": "synthetic"}
    )
    assert report.passed  # the gate passed; the unchecked metrics neither pass nor fail it
    (warning,) = report.warnings
    assert "box agreement is 0.0%" in warning and "--min-box-agreement" in warning
    data = report.to_dict()
    assert data["passed"] and data["warnings"] == [warning]
    assert [c["result"] for c in data["checks"]] == ["pass", "not checked", "not checked"]
    md = render_validation(report, "polygraphy run model.onnx")  # the report.md section
    assert "| box agreement | 0.0% | - | not checked |" in md and f"**Warning:** {warning}" in md


def test_markdown_cells_escape_pipes():
    # `atol + rtol·max|ref|` inside a cell used to end the cell early and break report.md's table
    table = markdown_table(["tolerance"], [["atol 1e-05 + rtol 0.0001·max|ref|"]])
    assert table.splitlines()[-1] == "| atol 1e-05 + rtol 0.0001·max\\|ref\\| |"


def test_validate_gate_flags_are_checked_before_anything_loads(tmp_path: Path):
    result = run_cli("validate", str(tmp_path / "nowhere"), "--min-top1", "95")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "error: --min-top1 must be a fraction in [0, 1] (0.95 for 95%), got 95"
    ]


# --- list, help, version, exit codes ----------------------------------------------------------------------


def test_list_is_a_whole_static_table_when_piped():
    result = run_cli("list")
    assert result.returncode == 0, result.stderr
    assert "…" not in result.stdout  # rich's ellipsis: a cell cut to fit 80 columns
    names = list_models()
    assert all(f" {name} " in result.stdout for name in names)
    assert "2 x multiply-adds" in result.stdout

    data = json.loads(run_cli("list", "--arch", "yolov8", "--json").stdout)  # stdout holds only the JSON
    assert {r["model"] for r in data["models"]} == {n for n in names if n.startswith("yolov8s-")}

    unknown = run_cli("list", "--arch", "yolov9")
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert unknown.stderr.strip().splitlines() == [
        "error: unknown architecture 'yolov9'; choose from resnet18, resnet50, yolov8m, yolov8n, yolov8s"
    ]


def test_the_static_zoo_table_is_current():
    # `list` prints attn_deploy/data/zoo_table.json without torch; rewrite it with `python -m benchmarks.zoo_table`
    table = json.loads(ZOO_TABLE.read_text())
    assert [r["model"] for r in table["models"]] == list_models()
    sample = ["resnet18-se", "yolov8n-eca"]
    fresh = zoo_table(sample)
    assert fresh["aliases"] == table["aliases"]
    assert fresh["models"] == [r for r in table["models"] if r["model"] in sample]


def test_version_help_and_usage_errors(capsys: pytest.CaptureFixture[str]):
    version = run_cli("--version")  # a fresh interpreter: the installed versions, read without importing them
    assert (
        version.returncode == 0 and version.stdout.startswith("attn-deploy 0.") and "torch" in version.stdout
    )
    with pytest.raises(SystemExit) as helped:
        main(["--help"])
    out = capsys.readouterr().out
    assert helped.value.code == 0 and "exit codes:" in out and "usage or input error" in out
    with pytest.raises(SystemExit) as usage:
        main(["list", "--no-such-flag"])
    assert usage.value.code == 2  # argparse's usage errors are 2, as documented
    capsys.readouterr()
    assert main(["list", "--quiet"]) == 0 and capsys.readouterr().out == ""
    assert (
        main(["list", "--arch", "resnet18"]) == 0 and "resnet18-se" in capsys.readouterr().out
    )  # loud again


# --- named dynamic output dims ----------------------------------------------------------------------------


def test_only_a_sum_of_positions_over_feature_maps_is_called_anchors():
    p3 = "(((2*(((height - 1)//32)) + 2)*((width - 1)//32 + 1))//2)"
    p4 = "((4*((height - 1)//32) + 4)*(2*((width - 1)//32) + 2))//2"
    yolo = f"{p3} + {p4}"  # as the exporter writes YOLO's output length (shortened)
    assert is_summed_positions(yolo)
    assert not is_summed_positions(
        "(((height - 1)//2)) + 1"
    )  # a strided conv's height: "+" alone is not a sum
    assert not is_summed_positions("((((width - 1)//2)) + 1)*((((height - 1)//2)) + 1)")  # one map, flattened


class TwoScaleHead(nn.Module):
    """A dense head over two feature maps (strides 2 and 4), flattened and concatenated as YOLO's Detect does:
    its output length is ``h/2*w/2 + h/4*w/4``, a formula in the exported graph."""

    def __init__(self) -> None:
        super().__init__()
        self.p2 = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.p4 = nn.Conv2d(6, 6, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.p2(x)
        b = self.p4(a)
        return torch.cat([a.flatten(2), b.flatten(2)], dim=2)


def test_own_model_to_a_full_artifact_with_a_named_summed_output_dim(tmp_path: Path):
    # export_artifact: one's own nn.Module -> engines/<name>/<target>/ that serve and triton-repo take
    torch.manual_seed(0)
    out = tmp_path / "two-scale" / "ort-fp32-dynamic"
    artifact, res = export_artifact(
        TwoScaleHead(), torch.rand(1, 3, 16, 16), out, dynamic_batch=True, dynamic_hw=True
    )
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx", "report.md"]
    assert artifact.name == "two-scale" and artifact.manifest["target"] == "ort-fp32"
    assert res.parity.passed and len(res.shapes) >= 3  # verified at shapes other than the export's
    assert res.outputs[0]["shape"] == ["batch", 6, "anchors"] == artifact.manifest["outputs"][0]["shape"]
    (output,) = onnx.load(str(res.path)).graph.output
    assert output.type.tensor_type.shape.dim[2].dim_param == "anchors"
    assert output.doc_string.startswith("anchors = ") and "+" in output.doc_string  # the formula, kept


def test_json_and_quiet_on_every_reporting_command():
    parser = build_parser()
    for argv in (["list"], ["export", "--model", "m"], ["validate", "a"], ["bench", "--model", "m"]):
        assert parser.parse_args([*argv, "--json"]).json == "-"  # alone: stdout
        assert parser.parse_args([*argv, "--json", "out.json", "-q"]).json == "out.json"
    assert parser.parse_args(["serve", "a", "--quiet"]).quiet


def test_config_prints_the_resolved_target(capsys):
    assert main(["config", "ort-int8", "--dynamic", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["name"] == "ort-int8-dynamic" and data["dynamic"]["hw"] and data["precision"] == "int8"
    assert data["tolerances"]["anchor_box_agreement"] == 0.3 and data["tolerances"]["box_agreement"] is None


# --- serving any ONNX, two targets of one model, Triton's index and statistics -----------------------------


def test_serve_plain_onnx_and_two_targets_of_one_model_with_tritonclient(tmp_path: Path):
    import numpy as np
    import onnxruntime as ort
    import tritonclient.http as httpclient

    from attn_deploy.errors import ConfigError
    from attn_deploy.serve.server import BackgroundServer
    from attn_deploy.serve.sources import model_name
    from tests._serve_helpers import INPUT_SHAPE, make_artifact

    artifact = make_artifact(tmp_path / "tiny-gate" / "ort-fp32")
    twin = tmp_path / "tiny-gate" / "ort-fp32-copy"
    shutil.copytree(artifact, twin)
    plain = shutil.copyfile(artifact / "model.onnx", tmp_path / "gate.onnx")  # as export_onnx writes one
    with pytest.raises(ConfigError, match=r"are both model 'tiny-gate'; name each with --name"):
        BackgroundServer([artifact, twin])

    with BackgroundServer([artifact, twin, plain], names=["gate-fp32", "gate-copy", "gate"]) as srv:
        client = httpclient.InferenceServerClient(url=srv.url)
        index = client.get_model_repository_index()
        assert {(m["name"], m["state"]) for m in index} == {
            ("gate-fp32", "READY"),
            ("gate-copy", "READY"),
            ("gate", "READY"),
        }
        images = np.random.default_rng(0).standard_normal((2, *INPUT_SHAPE)).astype(np.float32)
        inp = httpclient.InferInput("images", list(images.shape), "FP32").set_data_from_numpy(images)
        result = client.infer("gate", [inp])
        expected = ort.InferenceSession(str(plain)).run(None, {"images": images})
        np.testing.assert_array_equal(result.as_numpy("pooled"), expected[1])  # same graph, same kernels

        (stat,) = client.get_inference_statistics("gate")["model_stats"]
        assert (stat["name"], stat["version"], stat["inference_count"], stat["execution_count"]) == (
            "gate",
            "1",
            2,
            1,
        )
        assert (
            stat["inference_stats"]["success"]["count"] == 1 and stat["inference_stats"]["success"]["ns"] > 0
        )
        assert stat["last_inference"] > 0
        every = client.get_inference_statistics()["model_stats"]
        assert sorted(s["name"] for s in every) == ["gate", "gate-copy", "gate-fp32"]
        assert "statistics" in client.get_server_metadata()["extensions"]
        client.close()

    assert model_name("my model (v2)") == "my-model-v2"  # a file stem as a name a URL and Triton take
    assert main(["validate", str(plain)]) == 2  # a bare ONNX has no PyTorch reference: one line, naming why
    repo = tmp_path / "repo"
    assert main(["triton-repo", str(plain), "--name", "my-gate", "--out", str(repo), "-q"]) == 0
    config = (repo / "my-gate" / "config.pbtxt").read_text()
    assert 'name: "my-gate"' in config and 'platform: "onnxruntime_onnx"' in config
    assert (repo / "my-gate" / "1" / "model.onnx").read_bytes() == plain.read_bytes()
