"""`attn-deploy triton-repo`: the written config.pbtxt parses with Triton's own ModelConfig proto and
agrees with the ONNX signature as onnxruntime reads it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnxruntime as ort
import pytest
from google.protobuf import text_format

from attn_deploy.cli import main
from attn_deploy.errors import ConfigError
from attn_deploy.serve.triton_repo import write_triton_repository
from tests._serve_helpers import make_artifact, triton_model_config_pb2

ORT_TO_TRITON = {"tensor(float)": "TYPE_FP32", "tensor(float16)": "TYPE_FP16", "tensor(int64)": "TYPE_INT64"}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("engines")
    return {
        "dynamic": make_artifact(root / "tiny-gate" / "ort-fp32", name="tiny-gate", dynamic_batch=True),
        "static": make_artifact(root / "tiny-static" / "ort-fp32", name="tiny-static", dynamic_batch=False),
    }


def _parse(path: Path):
    return text_format.Parse(path.read_text(), triton_model_config_pb2().ModelConfig())


def _check_against_onnx(config, onnx_path: Path) -> None:
    """Names, types and dims of ``config`` equal the ONNX signature as onnxruntime reads it."""
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    pb2 = triton_model_config_pb2()
    batched = config.max_batch_size > 0
    for declared, actual in ((config.input, session.get_inputs()), (config.output, session.get_outputs())):
        assert [t.name for t in declared] == [t.name for t in actual]
        for tensor, ort_tensor in zip(declared, actual, strict=True):
            assert pb2.DataType.Name(tensor.data_type) == ORT_TO_TRITON[ort_tensor.type]
            dims = [d if isinstance(d, int) else -1 for d in ort_tensor.shape]
            if batched:
                assert dims[0] == -1
                dims = dims[1:]
            assert list(tensor.dims) == dims


def test_cli_writes_repository_that_matches_the_onnx(artifacts: dict[str, Path], tmp_path: Path) -> None:
    repo = tmp_path / "model_repository"
    dirs = [str(artifacts["dynamic"]), str(artifacts["static"])]
    assert (
        main(["triton-repo", *dirs, "--out", str(repo), "--max-batch", "16", "--trt-accelerator", "fp16"])
        == 0
    )

    dynamic = _parse(repo / "tiny-gate" / "config.pbtxt")
    assert dynamic.name == "tiny-gate" and dynamic.platform == "onnxruntime_onnx"
    assert dynamic.max_batch_size == 16
    assert dynamic.dynamic_batching.max_queue_delay_microseconds == 2000
    (accelerator,) = dynamic.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt" and dict(accelerator.parameters) == {"precision_mode": "FP16"}
    _check_against_onnx(dynamic, artifacts["dynamic"] / "model.onnx")
    copied = repo / "tiny-gate" / "1" / "model.onnx"
    assert copied.read_bytes() == (artifacts["dynamic"] / "model.onnx").read_bytes()

    static = _parse(repo / "tiny-static" / "config.pbtxt")
    assert static.max_batch_size == 0 and not static.HasField("dynamic_batching")
    _check_against_onnx(static, artifacts["static"] / "model.onnx")
    assert (repo / "tiny-static" / "1" / "model.onnx").is_file()
    assert not list(repo.rglob("*.tmp"))  # atomic writes leave nothing behind


def test_tensorrt_plan_artifact_becomes_a_tensorrt_plan_model(
    artifacts: dict[str, Path], tmp_path: Path
) -> None:
    artifact = tmp_path / "trt-fp16"
    shutil.copytree(artifacts["dynamic"], artifact)
    engine = b"serialized TensorRT engine bytes"
    (artifact / "model.plan").write_bytes(engine)
    repo = tmp_path / "repo"
    write_triton_repository([artifacts["dynamic"]], repo)  # first ONNX, then replaced by the plan
    (written,) = write_triton_repository([artifact], repo, max_batch=4, trt_precision="fp16")
    assert written.platform == "tensorrt_plan"
    config = _parse(repo / "tiny-gate" / "config.pbtxt")
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 4
    assert not config.HasField("optimization")  # the accelerator block is for ONNX models only
    _check_against_onnx(config, artifact / "model.onnx")
    assert (repo / "tiny-gate" / "1" / "model.plan").read_bytes() == engine
    assert not (repo / "tiny-gate" / "1" / "model.onnx").exists()


def test_max_batch_zero_turns_batching_off(artifacts: dict[str, Path], tmp_path: Path) -> None:
    (written,) = write_triton_repository([artifacts["dynamic"]], tmp_path, max_batch=0)
    config = _parse(written.directory / "config.pbtxt")
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    _check_against_onnx(config, artifacts["dynamic"] / "model.onnx")


def test_same_model_twice_is_a_clear_error(artifacts: dict[str, Path], tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(artifacts["dynamic"], copy)
    with pytest.raises(ConfigError, match="are both model 'tiny-gate'; name each with --name"):
        write_triton_repository([artifacts["dynamic"], copy], tmp_path / "repo")
    assert main(["triton-repo", str(artifacts["dynamic"]), str(copy), "--out", str(tmp_path / "repo")]) == 2


@pytest.mark.parametrize("name", ["../escaped", "..", ".hidden", "a/b"])
def test_a_model_name_never_escapes_the_repository(
    artifacts: dict[str, Path], tmp_path: Path, name: str, capsys
) -> None:
    forged = tmp_path / "forged"
    shutil.copytree(artifacts["dynamic"], forged)
    manifest = json.loads((forged / "manifest.json").read_text())
    (forged / "manifest.json").write_text(json.dumps({**manifest, "model": name}))
    repo = tmp_path / "deep" / "repo"
    assert main(["triton-repo", str(forged), "--out", str(repo)]) == 2
    err = capsys.readouterr().err
    assert "cannot be a file or folder name" in err and "Traceback" not in err
    assert not (tmp_path / "deep").exists() and not (tmp_path / "escaped").exists()


def test_a_bad_out_or_option_writes_nothing(artifacts: dict[str, Path], tmp_path: Path, capsys) -> None:
    (tmp_path / "file").write_text("x")
    for extra, needle in (
        (["--out", str(tmp_path / "file")], "is a file"),
        (["--out", str(tmp_path / "file" / "repo")], "is a file"),
        (["--out", str(tmp_path / "repo"), "--max-batch", "-1"], "--max-batch must be 0..256"),
        (["--out", str(tmp_path / "repo"), "--max-delay-ms", "nan"], "--max-delay-ms must be"),
        (["--out", ""], "--out is empty"),
        (["--out", " "], "--out is empty"),
    ):
        assert main(["triton-repo", str(artifacts["dynamic"]), *extra]) == 2
        assert needle in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_version_folders_left_by_others_are_never_served(
    artifacts: dict[str, Path], tmp_path: Path, capsys
) -> None:
    """Triton serves the highest version folder by default: a stale 3/ must not win over the 1/ written here."""
    stale = tmp_path / "repo" / "tiny-gate" / "3"
    stale.mkdir(parents=True)
    (stale / "model.onnx").write_bytes(b"someone else's model")
    assert main(["triton-repo", str(artifacts["dynamic"]), "--out", str(tmp_path / "repo")]) == 0
    config = _parse(tmp_path / "repo" / "tiny-gate" / "config.pbtxt")
    assert list(config.version_policy.specific.versions) == [1]
    assert "version folders 3 in" in " ".join(capsys.readouterr().out.split())
    assert (stale / "model.onnx").read_bytes() == b"someone else's model"  # not ours to delete
