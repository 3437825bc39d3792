"""Issue 16, the GPU step: `build-engine`, the trtexec / polygraphy commands, profiles from the CLI, and
`triton-repo` with TensorRT targets (never quietly ONNX, max_batch_size within the engine profile) and --kserve.
No TensorRT here: the build itself is tests/test_tensorrt.py (GPU)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import yaml
from google.protobuf import text_format

from attn_deploy.backends.trt_commands import polygraphy_command, shell_line, trtexec_command
from attn_deploy.cli import main
from attn_deploy.commands.shape_flags import parse_shapes, profile_overrides, with_cli_profiles
from attn_deploy.config import ShapeProfile, TensorRTConfig, load_config
from attn_deploy.errors import ConfigError
from attn_deploy.serve.kserve import inference_service, service_name
from attn_deploy.serve.triton_repo import plan_max_batch
from tests._serve_helpers import make_artifact, triton_model_config_pb2

NO_TENSORRT = pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None, reason="a tensorrt package is importable here"
)


@pytest.fixture(scope="module")
def trt_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny dynamic-batch artifact whose manifest records the trt-fp16-dynamic config (as an export with
    --config trt-fp16-dynamic does on a machine without TensorRT)."""
    out = make_artifact(tmp_path_factory.mktemp("engines") / "tiny-gate" / "trt-fp16-dynamic")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["config"] = load_config("trt-fp16-dynamic").to_dict()
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def _copy(src: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(src, tmp_path / "tiny-gate" / src.name))


def test_shape_flags_parse_like_trtexec():
    assert parse_shapes("images:1x3x320x320", "--min-shape") == {"images": [1, 3, 320, 320]}
    assert parse_shapes("1x3x64x64", "--min-shape") == {"*": [1, 3, 64, 64]}
    assert parse_shapes("a:1x2, b:3x4", "--max-shape") == {"a": [1, 2], "b": [3, 4]}
    for bad in ("images:1x3x0x320", "images:1,3", "images:", "a:1x2,a:1x2", "1x3x-1x4"):
        with pytest.raises(ConfigError, match="--min-shape"):
            parse_shapes(bad, "--min-shape")
    args = argparse.Namespace(min_shape="1x3x64x64", opt_shape="2x3x64x64", max_shape=None)
    with pytest.raises(ConfigError, match="--max-shape missing"):
        profile_overrides(args)
    args.max_shape = "4x3x128x128"
    config = with_cli_profiles(load_config("trt-fp16-dynamic"), args)
    assert config.profiles == {"*": ShapeProfile((1, 3, 64, 64), (2, 3, 64, 64), (4, 3, 128, 128))}
    args.opt_shape = "8x3x64x64"  # opt > max: checked like a YAML profile
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        with_cli_profiles(load_config("trt-fp16-dynamic"), args)
    with pytest.raises(ConfigError, match="ort-fp16 is an ONNX Runtime target"):
        with_cli_profiles(load_config("ort-fp16"), args)


def test_trtexec_and_polygraphy_commands_carry_the_profiles():
    profiles = {"images": ShapeProfile((1, 3, 320, 320), (1, 3, 640, 640), (16, 3, 1280, 1280))}
    trt = TensorRTConfig(workspace_mib=2048, optimization_level=4)
    assert shell_line(trtexec_command("model.onnx", "model.plan", profiles, trt, "timing.cache")) == (
        "trtexec --onnx=model.onnx --saveEngine=model.plan --stronglyTyped --memPoolSize=workspace:2048M "
        "--builderOptimizationLevel=4 --minShapes=images:1x3x320x320 --optShapes=images:1x3x640x640 "
        "--maxShapes=images:16x3x1280x1280 --timingCacheFile=timing.cache"
    )
    assert polygraphy_command("model.onnx", "model.plan", profiles, trt) == [
        "polygraphy", "convert", "model.onnx", "--convert-to", "trt", "-o", "model.plan", "--strongly-typed",
        "--pool-limit", "workspace:2048M", "--builder-optimization-level", "4",
        "--trt-min-shapes", "images:[1,3,320,320]", "--trt-opt-shapes", "images:[1,3,640,640]",
        "--trt-max-shapes", "images:[16,3,1280,1280]",
    ]  # fmt: skip
    static = trtexec_command("model.onnx", "model.plan", {}, trt)  # a static model takes no shapes
    assert not any("Shapes" in a for a in static) and "--fp16" not in static and "--int8" not in static


@NO_TENSORRT
def test_build_engine_without_tensorrt_records_the_commands_and_exits_2(trt_artifact, tmp_path, capsys):
    artifact = _copy(trt_artifact, tmp_path)
    before = (artifact / "manifest.json").read_bytes()
    argv = ["build-engine", str(artifact), "--min-shape", "1x3x16x16", "--opt-shape", "2x3x16x16"]
    assert main([*argv, "--max-shape", "4x3x16x16", "--commands-only"]) == 0
    assert (artifact / "manifest.json").read_bytes() == before  # --commands-only writes nothing
    assert "--maxShapes=images:4x3x16x16" in capsys.readouterr().out.replace("\n", "").replace(" ", "")

    assert main([*argv, "--max-shape", "4x3x16x16"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no engine built: TensorRT is not installed" in err
    engine = json.loads((artifact / "manifest.json").read_text())["engine"]
    assert engine["built"] is False and engine["profiles"]["images"] == [
        [1, 3, 16, 16],
        [2, 3, 16, 16],
        [4, 3, 16, 16],
    ]
    assert "--maxShapes=images:4x3x16x16" in engine["commands"]["trtexec"]
    report = (artifact / "report.md").read_text()
    assert "**Not built**" in report and engine["commands"]["polygraphy"] in report
    assert not (artifact / "model.plan").exists()

    assert main(["build-engine", str(artifact), "--min-shape", "1x3x16x16"]) == 2  # one flag of three
    assert "--opt-shape, --max-shape missing" in capsys.readouterr().err
    assert (
        main(
            [
                "build-engine",
                str(artifact),
                "--min-shape",
                "1x3x8x8",
                "--opt-shape",
                "1x3x8x8",
                "--max-shape",
                "1x3x8x8",
            ]
        )
        == 2
    )
    assert "dim 2 is static (16)" in capsys.readouterr().err


def test_triton_repo_never_writes_an_unbuilt_tensorrt_target_as_onnx(trt_artifact, tmp_path, capsys):
    repo = tmp_path / "repo"
    assert main(["triton-repo", str(trt_artifact), "--out", str(repo)]) == 2
    assert "TensorRT target without an engine" in capsys.readouterr().err
    assert not repo.exists() or not any(repo.iterdir())


def test_plan_max_batch_is_clamped_or_refused_against_the_profile():
    assert plan_max_batch(None, (1, 16)) == (8, None)
    assert plan_max_batch(None, (1, 4))[0] == 4  # the default, clamped, with a note
    assert plan_max_batch(4, (1, 4)) == (4, None) and plan_max_batch(0, (2, 4)) == (0, None)
    with pytest.raises(ConfigError, match="--max-batch 8 exceeds the engine profile's max batch 4"):
        plan_max_batch(8, (1, 4))
    with pytest.raises(ConfigError, match="starts at batch 2"):
        plan_max_batch(None, (2, 8))


def test_triton_repo_with_a_built_plan_and_kserve(trt_artifact, tmp_path, capsys):
    artifact = _copy(trt_artifact, tmp_path)
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest["engine"] = {
        "built": True,
        "plan": "model.plan",
        "profiles": {"images": [[1, 3, 16, 16]] * 2 + [[4, 3, 16, 16]]},
    }
    (artifact / "manifest.json").write_text(json.dumps(manifest))
    (artifact / "model.plan").write_bytes(b"engine bytes")
    repo = tmp_path / "Model_Repo"
    assert main(["triton-repo", str(artifact), "--out", str(repo), "--max-batch", "8"]) == 2
    assert "exceeds the engine profile's max batch 4" in capsys.readouterr().err
    assert not (repo / "tiny-gate").exists()  # refused before writing

    assert (
        main(
            [
                "triton-repo",
                str(artifact),
                "--out",
                str(repo),
                "--kserve",
                "--storage-uri",
                "s3://bucket/repo",
            ]
        )
        == 0
    )
    assert "clamped" in capsys.readouterr().out
    config = text_format.Parse(
        (repo / "tiny-gate" / "config.pbtxt").read_text(), triton_model_config_pb2().ModelConfig()
    )
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 4
    service = yaml.safe_load((tmp_path / "Model_Repo-inferenceservice.yaml").read_text())
    assert service["kind"] == "InferenceService" and service["metadata"]["name"] == "model-repo"
    model = service["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "triton"} and model["runtime"] == "kserve-tritonserver"
    assert model["storageUri"] == "s3://bucket/repo" and model["resources"]["limits"]["nvidia.com/gpu"] == "1"

    if importlib.util.find_spec("tensorrt") is None:  # a failed rebuild keeps the engine built earlier
        before = (artifact / "manifest.json").read_bytes()
        assert main(["build-engine", str(artifact)]) == 2
        assert "the engine built earlier (model.plan) and its manifest are kept" in capsys.readouterr().err
        assert (artifact / "manifest.json").read_bytes() == before
        assert (artifact / "model.plan").read_bytes() == b"engine bytes"


def test_kserve_names_and_uris_are_checked():
    assert service_name("My_Repo.v2") == "my-repo-v2" and service_name("123") == "attn-deploy"
    assert (
        "resources" not in inference_service("cpu-only", "gs://b/r", gpu=False)["spec"]["predictor"]["model"]
    )
    with pytest.raises(ConfigError, match="not a Kubernetes name"):
        inference_service("Bad_Name", "gs://b/r", gpu=False)
    with pytest.raises(ConfigError, match="not a URI KServe downloads from"):
        inference_service("ok", "/local/path", gpu=False)
