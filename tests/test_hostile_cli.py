"""Hostile input to every command: each bad option or file is one red line, exit 2, nothing written; an
artifact is verified on load; names never escape their folder; a crash or Ctrl-C leaves no staging behind."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attn_deploy.artifacts import load_artifact, staged_directory
from attn_deploy.cli import main
from attn_deploy.errors import ConfigError, InputError
from attn_deploy.fsutil import check_name

MODEL = "resnet18-se"
REPO = Path(__file__).resolve().parent.parent


def snapshot(root: Path) -> list[tuple[str, int, int]]:
    """Every entry under ``root`` (hidden ones too) with its size and modification time."""
    return sorted(
        (str(p.relative_to(root)), p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.rglob("*")
    )


def assert_one_red_line(capsys: pytest.CaptureFixture[str], needle: str) -> None:
    captured = capsys.readouterr()
    assert captured.out == "", "nothing on stdout (a script reading it gets no stray blank line)"
    err = captured.err.strip()
    assert err.startswith("error:") and needle in err, err
    assert len(err.splitlines()) <= 2 and "Traceback" not in err  # rich may wrap a long line once


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small verified zoo artifact (the few tests that need an export share it)."""
    from attn_deploy.workflow.zoo import export_zoo_model

    root = tmp_path_factory.mktemp("engines")
    art, _ = export_zoo_model(MODEL, imgsz=64, out_root=root)
    return art.dir


def _png(path: Path, size: int = 32) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def _bomb_png(path: Path, side: int = 30_000) -> Path:
    """A valid 1x1 PNG whose header claims ``side`` x ``side`` pixels (900 M: a decompression bomb)."""
    data = bytearray(_png(path, 1).read_bytes())
    ihdr = struct.pack(">II", side, side) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path.write_bytes(bytes(data))
    return path


BAD_IMAGES: dict[str, Callable[[Path], object]] = {
    "bomb": lambda p: _bomb_png(p),
    "truncated": lambda p: p.write_bytes(_png(p, 64).read_bytes()[:300]),
    "text": lambda p: p.write_text("not an image\n"),
    "empty": lambda p: p.write_bytes(b""),
}


def bad_image_dir(root: Path, kind: str) -> Path:
    folder = root / f"images-{kind}"
    folder.mkdir()
    _png(folder / "a-good.png")
    BAD_IMAGES[kind](folder / "b-bad.png")
    return folder


# ------------------------------------------------------------------------------------ one red line, exit 2


def _write(name: str, data: bytes | str) -> Callable[[Path], str]:
    def make(tmp: Path) -> str:
        path = tmp / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        return str(path)

    return make


def _folder(tmp: Path) -> str:
    (tmp / "folder").mkdir(exist_ok=True)
    return str(tmp / "folder")


def _garbage_zip(tmp: Path) -> str:
    path = tmp / "garbage.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"garbage")
    return str(path)


def _a_file(tmp: Path) -> str:
    return _write("a-file", "x")(tmp)


def _link_to_proc(tmp: Path) -> str:
    """A symbolic link to a file in /proc: checked where it points, before the work."""
    link = tmp / "result.json"
    link.symlink_to("/proc/attn-deploy-test.json")
    return str(link)


EXPORT = ["export", "--model", MODEL, "--imgsz", "64"]
CASES: list[tuple[str, list[str | Callable[[Path], str]], str]] = [
    ("imgsz-huge", ["export", "--model", MODEL, "--imgsz", "100000"], "larger than 4096"),
    ("imgsz-tiny", ["export", "--model", MODEL, "--imgsz", "7"], "at least 8"),
    ("imgsz-zero", ["export", "--model", MODEL, "--imgsz", "0,64"], "at least 8"),
    ("imgsz-yolo", ["export", "--model", "yolov8n-eca", "--imgsz", "4097"], "larger than 4096"),
    ("batch-huge", [*EXPORT, "--batch", "100000000"], "--batch must be between 1 and 256"),
    ("batch-zero", [*EXPORT, "--batch", "0"], "--batch must be between 1 and"),
    ("opset-5", [*EXPORT, "--opset", "5"], "--opset: 5 is not allowed; use 17..20"),
    ("opset-99", [*EXPORT, "--opset", "99"], "--opset: 99 is not allowed"),
    ("opset-neg", [*EXPORT, "--opset", "-1"], "--opset: -1 is not allowed"),
    ("config-dot", [*EXPORT, "--config", _write("dot.yaml", 'name: "."\n')], "name '.' cannot be"),
    ("config-dotdot", [*EXPORT, "--config", _write("up.yaml", 'name: ".."\n')], "name '..' cannot be"),
    ("config-slash", [*EXPORT, "--config", _write("s.yaml", "name: a/b\n")], "it contains '/'"),
    ("config-not-utf8", [*EXPORT, "--config", _write("b.yaml", b"\xff\xfe\x00name")], "not a UTF-8"),
    ("config-list", [*EXPORT, "--config", _write("l.yaml", "- 1\n")], "must be a mapping"),
    ("config-syntax", [*EXPORT, "--config", _write("y.yaml", "a: [1\n")], "is not valid YAML"),
    ("config-folder", [*EXPORT, "--config", _folder], "is a folder"),
    ("config-int-key", [*EXPORT, "--config", _write("k.yaml", "1: 2\n")], "unknown key '1'"),
    ("weights-text", [*EXPORT, "--weights", _write("w.pt", "hello\n")], "cannot read weights"),
    ("weights-empty", [*EXPORT, "--weights", _write("e.pt", b"")], "cannot read weights"),
    ("weights-folder", [*EXPORT, "--weights", _folder], "is a folder"),
    ("weights-zip", [*EXPORT, "--weights", _garbage_zip], "cannot read weights"),
    ("out-file", [*EXPORT, "--out", _a_file], "is a file"),
    ("out-under-file", [*EXPORT, "--out", lambda t: _a_file(t) + "/sub"], "is a file"),
    ("model-path", ["export", "--model", "../etc"], "unknown model"),
    ("validate-images-0", ["validate", "{artifact}", "--images", "0"], "--images must be between 1"),
    ("validate-images-neg", ["validate", "{artifact}", "--images", "-1"], "--images must be between 1"),
    ("validate-images-huge", ["validate", "{artifact}", "--images", "100000000"], "--images must be"),
    ("validate-seed", ["validate", "{artifact}", "--seed", "-1"], "--seed must be >= 0"),
    ("validate-image-dir", ["validate", "{artifact}", "--image-dir", "/nonexistent"], "does not exist"),
    ("validate-image-file", ["validate", "{artifact}", "--image-dir", _a_file], "is not a folder"),
    ("calib-dir-file", [*EXPORT, "--precision", "int8", "--calib-dir", _a_file], "is not a folder"),
    ("validate-config", ["validate", "{artifact}", "--config", _folder], "is a folder"),
    ("validate-not-artifact", ["validate", _folder], "is not an artifact directory"),
    ("triton-out-file", ["triton-repo", "{artifact}", "--out", _a_file], "is a file"),
    ("triton-max-batch", ["triton-repo", "{artifact}", "--max-batch", "-1"], "--max-batch must be 0..256"),
    ("triton-max-batch-huge", ["triton-repo", "{artifact}", "--max-batch", "1000000000"], "--max-batch must"),
    ("triton-delay-nan", ["triton-repo", "{artifact}", "--max-delay-ms", "nan"], "--max-delay-ms must"),
    ("triton-delay-inf", ["triton-repo", "{artifact}", "--max-delay-ms", "inf"], "--max-delay-ms must"),
    ("bench-imgsz", ["bench", "--model", MODEL, "--imgsz", "100000"], "larger than 4096"),
    ("bench-batch", ["bench", "--model", MODEL, "--batch", "100000000"], "--batch must be between 1"),
    ("bench-runs", ["bench", "--model", MODEL, "--runs", "0"], "--runs must be 1..10000"),
    ("bench-runs-huge", ["bench", "--model", MODEL, "--runs", "100000000000"], "--runs must be"),
    ("bench-warmup", ["bench", "--model", MODEL, "--warmup-s", "nan"], "--warmup-s must be"),
    ("bench-threads", ["bench", "--model", MODEL, "--threads", "0"], "--threads must be 1.."),
    ("bench-threads-huge", ["bench", "--model", MODEL, "--threads", "100000"], "--threads must be 1.."),
    ("bench-backends", ["bench", "--model", MODEL, "--backends", ","], "unknown backend"),
    # an unset shell variable: never the current folder or the default in disguise
    ("empty-out", [*EXPORT, "--out", ""], "--out is empty"),
    ("blank-name", [*EXPORT, "--name", " "], "--name is empty"),
    ("empty-json", ["list", "--json", ""], "--json is empty"),
    ("empty-artifact", ["validate", ""], "ARTIFACT is empty"),
    ("bench-json-folder", ["bench", "--model", MODEL, "--json", _folder], "is a folder"),
    # a folder nobody can create files in, whatever its permission bits say to root: refused before the work
    ("validate-json-proc", ["validate", "{artifact}", "--json", "/proc/x.json"], "choose another --json"),
    ("bench-out-proc", ["bench", "--model", MODEL, "--out", "/proc/nope"], "choose another --out"),
    ("validate-json-link-proc", ["validate", "{artifact}", "--json", _link_to_proc], "choose another --json"),
    ("bench-out-file", ["bench", "--model", MODEL, "--out", _a_file], "is a file"),
    ("bench-attention", ["bench", "--arch", "resnet18", "--attention", "nope"], "unknown attention"),
    ("bench-arch", ["bench", "--arch", "resnet7"], "unknown model"),
    (
        "bench-claims-model",
        ["bench", "--model", MODEL, "--seed-claims", _a_file],
        "--seed-claims goes with --arch",
    ),
    ("bench-cuda-graphs", ["bench", "--model", MODEL, "--cuda-graphs"], "add --backends torch-cuda"),
    ("list-arch", ["list", "--arch", "nope"], "unknown architecture 'nope'; choose from resnet18"),
]
CASES += [
    (
        f"calib-{kind}",
        [*EXPORT, "--precision", "int8", "--calib-dir", lambda t, k=kind: str(bad_image_dir(t, k))],
        "pixels" if kind == "bomb" else "cannot read image",
    )
    for kind in BAD_IMAGES
]
CASES += [
    (
        f"validate-{kind}",
        ["validate", "{artifact}", "--image-dir", lambda t, k=kind: str(bad_image_dir(t, k))],
        "pixels" if kind == "bomb" else "cannot read image",
    )
    for kind in BAD_IMAGES
]


@pytest.mark.parametrize(("argv", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_red_line_and_writes_nothing(
    argv: list[str | Callable[[Path], str]],
    needle: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    capsys,
) -> None:
    inputs, out = tmp_path / "inputs", tmp_path / "out"
    inputs.mkdir()
    out.mkdir()
    uses_artifact = "{artifact}" in argv
    art = request.getfixturevalue("artifact") if uses_artifact else None
    args = [a(inputs) if callable(a) else str(art) if a == "{artifact}" else a for a in argv]
    if args[0] in ("export", "triton-repo", "bench") and "--out" not in args:
        args += ["--out", str(out)]
    before_inputs, before_out = snapshot(inputs), snapshot(out)
    before_art = snapshot(art) if art else None
    assert main(args) == 2
    assert_one_red_line(capsys, needle)
    assert snapshot(out) == before_out and snapshot(inputs) == before_inputs, "nothing is written"
    assert art is None or snapshot(art) == before_art, "the artifact is left as it was"


# ------------------------------------------------------------------------------ names, paths, data loss


@pytest.mark.parametrize(
    "name", [".", "..", "", "a/b", "a\\b", "a\0b", ".hidden", "x" * 101, "tab\there", None]
)
def test_one_validator_refuses_every_unsafe_name(name) -> None:
    with pytest.raises(ConfigError, match="cannot be a file or folder name"):
        check_name(name, "name")
    for good in ("ort-fp32", "trt-fp16-dynamic", "resnet50-se", "a.b_c"):
        assert check_name(good, "name") == good


def test_staged_directory_refuses_parents_roots_and_foreign_folders(tmp_path: Path, monkeypatch) -> None:
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    monkeypatch.chdir(work / "sub")
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"precious")
    for final in (".", "..", "/", str(work), str(foreign), str(tmp_path / "a-file" / "x")):
        (tmp_path / "a-file").write_text("x")
        before = snapshot(tmp_path)
        with pytest.raises(ConfigError), staged_directory(final) as staging:
            (staging / "model.onnx").write_bytes(b"new")
        assert snapshot(tmp_path) == before


def test_a_write_replaces_only_its_own_artifact(tmp_path: Path) -> None:
    model = tmp_path / "engines" / MODEL
    for target in ("ort-fp32", "ort-fp16"):
        (model / target).mkdir(parents=True)
        (model / target / "manifest.json").write_text(f'{{"target": "{target}"}}')
    (model / "notes.txt").write_text("mine")
    with staged_directory(model / "ort-fp32") as staging:
        (staging / "manifest.json").write_text('{"target": "new"}')
    assert json.loads((model / "ort-fp32" / "manifest.json").read_text()) == {"target": "new"}
    assert json.loads((model / "ort-fp16" / "manifest.json").read_text()) == {"target": "ort-fp16"}
    assert (model / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in model.iterdir()) == ["notes.txt", "ort-fp16", "ort-fp32"]


def test_json_into_a_link_or_a_pipe_never_replaces_it(tmp_path: Path, capsys) -> None:
    """``--json`` onto a symbolic link writes its target; onto a FIFO (as onto /dev/null or /dev/stderr) writes
    into it. The atomic rename used to put a regular file in place of either (as root, of /dev/null itself)."""
    from attn_deploy import fsutil

    (tmp_path / "target.json").write_text("{}")
    (tmp_path / "link.json").symlink_to("target.json")
    assert main(["list", "--arch", "resnet18", "--json", str(tmp_path / "link.json")]) == 0
    assert (tmp_path / "link.json").is_symlink()
    assert "resnet18-se" in (tmp_path / "target.json").read_text()

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert main(["list", "--arch", "resnet18", "--json", str(fifo)]) == 2  # nobody reads: refused, no hang
    assert "no process reads the pipe" in capsys.readouterr().err
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # the JSON (a few kB) fits the pipe's buffer
    try:
        assert main(["list", "--arch", "resnet18", "--json", str(fifo)]) == 0
        assert fifo.is_fifo() and json.loads(os.read(reader, 1 << 20))["models"]
    finally:
        os.close(reader)
    (tmp_path / "loop-a").symlink_to("loop-b")
    (tmp_path / "loop-b").symlink_to("loop-a")
    assert main(["list", "--json", str(tmp_path / "loop-a")]) == 2
    assert "is a loop of symbolic links" in capsys.readouterr().err
    assert (tmp_path / "loop-a").is_symlink()
    capsys.readouterr()

    with pytest.raises(ConfigError, match="is a device, pipe or socket, not a file"):
        fsutil.write_text(fifo, "x")  # every other write refuses such a node rather than replace it
    assert fifo.is_fifo()


@pytest.mark.parametrize("extra", [[], ["--json"]])
def test_a_reader_that_went_away_is_exit_141_and_quiet(extra: list[str]) -> None:
    """``attn-deploy list | head -1``: standard output is a pipe nobody reads. rich exited 1 (which this CLI
    keeps for a failed check) and ``--json``'s own write was an "error: Broken pipe" line."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # no reader: the first write fails with EPIPE, as after head has exited
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "attn_deploy.cli", "list", "--arch", "resnet18", *extra],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 141 and proc.stderr == "", proc.stderr


def test_config_named_dot_keeps_the_other_targets(artifact: Path, tmp_path: Path, capsys) -> None:
    root = tmp_path / "engines"
    shutil.copytree(artifact, root / MODEL / "ort-fp32")
    before = snapshot(root)
    for name in (".", ".."):
        config = tmp_path / "c.yaml"
        config.write_text(f'name: "{name}"\n')
        assert main([*EXPORT, "--config", str(config), "--out", str(root)]) == 2
        assert_one_red_line(capsys, "cannot be a file or folder name")
        assert snapshot(root) == before


def test_manifest_names_become_no_paths(artifact: Path, tmp_path: Path) -> None:
    for key, value in (("model", "../../escape"), ("onnx", "../model.onnx")):
        copy = tmp_path / key
        shutil.copytree(artifact, copy)
        manifest = json.loads((copy / "manifest.json").read_text())
        (copy / "manifest.json").write_text(json.dumps({**manifest, key: value}))
        with pytest.raises(InputError, match=f"{key} '.*' cannot be a file or folder name.*re-export"):
            load_artifact(copy)


@pytest.mark.parametrize(
    "argv",
    [
        [*EXPORT, "--out", "{ro}"],
        ["triton-repo", "{artifact}", "--out", "{ro}/repo"],
        ["bench", "--model", MODEL, "--out", "{ro}"],
        ["bench", "--model", MODEL, "--json", "{ro}/bench.json"],
    ],
    ids=["export", "triton-repo", "bench-out", "bench-json"],
)
def test_a_read_only_out_is_refused_before_any_work(
    argv: list[str], request: pytest.FixtureRequest, tmp_path: Path, monkeypatch, capsys
) -> None:
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    if os.geteuid() == 0:  # root writes anyway: make os.access answer as for a normal user
        access = os.access
        monkeypatch.setattr(
            os, "access", lambda path, mode, **kw: Path(path) != read_only and access(path, mode)
        )
    art = request.getfixturevalue("artifact") if "{artifact}" in argv else None
    args = [a.replace("{ro}", str(read_only)).replace("{artifact}", str(art)) for a in argv]
    assert main(args) == 2
    assert_one_red_line(capsys, "is not writable")
    assert not list(read_only.iterdir())


# -------------------------------------------------------------------------------------------- integrity


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{not json", "is not valid JSON"),
        ("[" * 100_000 + "]" * 100_000, "is not valid JSON"),
        ("[1, 2]", "is not a JSON object"),
        ('{"model": "m", "inputs": [], "outputs": []}', "lacks sha256"),
    ],
    ids=["syntax", "deep", "list", "no-hash"],
)
def test_a_malformed_manifest_is_one_line(
    artifact: Path, tmp_path: Path, text: str, needle: str, capsys
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(artifact, broken)
    (broken / "manifest.json").write_text(text)
    before = snapshot(broken)
    for argv in (["validate", str(broken)], ["triton-repo", str(broken), "--out", str(tmp_path / "repo")]):
        assert main(argv) == 2
        assert_one_red_line(capsys, needle)
    assert snapshot(broken) == before and not (tmp_path / "repo").exists()


@pytest.mark.parametrize(
    ("update", "needle"),
    [
        ({"inputs": "x"}, "inputs is not a list of tensors"),
        ({"outputs": []}, "outputs is not a list of tensors"),
        ({"inputs": [{"name": 3}]}, "inputs is not a list of tensors"),
        (
            {"preprocess": {"kind": "letterbox", "size": [100000, 100000]}},
            "preprocess size [100000, 100000]",
        ),
        ({"preprocess": {"kind": "letterbox", "size": "big"}}, "is not [height, width] in 1..4096"),
        ({"preprocess": {"kind": "letterbox", "size": [64, 64], "std": [0, 0, 0]}}, "is malformed"),
        ({"preprocess": {"kind": "letterbox", "size": [64, 64], "mean": ["a"]}}, "is malformed"),
        # claims the graph does not bear out (the sha256 covers model.onnx only): ONNX Runtime's and numpy's
        # tracebacks, exit 1, before these checks
        ({"model": "yolov8n-se"}, "the manifest's model 'yolov8n-se' gives output 'logits' of shape"),
        ({"task": "detect"}, "task 'detect' has 3-D outputs, the graph's first is [1, 1000]"),
        (
            {"inputs": [{"name": "foo", "dtype": "float32", "shape": [1, 3, 64, 64]}]},
            "inputs ['foo'] are ['images']",
        ),
        (
            {"inputs": [{"name": "images", "dtype": "float32", "shape": [8, 3, 64, 64]}]},
            "images has shape [8, 3, 64, 64], the graph's is [1, 3, 64, 64]",
        ),
        (
            {"outputs": [{"name": "logits", "dtype": "float16", "shape": [1, 1000]}]},
            "the graph's is 'float32'",
        ),
        ({"preprocess": {"kind": "resize_crop", "size": [32, 32]}}, "differs from the input's static H x W"),
    ],
)
def test_a_hand_edited_manifest_is_one_line(
    artifact: Path, tmp_path: Path, update: dict, needle: str, capsys
) -> None:
    edited = tmp_path / "edited"
    shutil.copytree(artifact, edited)
    manifest = json.loads((edited / "manifest.json").read_text())
    (edited / "manifest.json").write_text(json.dumps({**manifest, **update}))
    before = snapshot(edited)
    assert main(["validate", str(edited), "--images", "1"]) == 2
    assert_one_red_line(capsys, needle)
    assert snapshot(edited) == before


def test_validate_refuses_an_artifact_whose_hash_does_not_match(
    artifact: Path, tmp_path: Path, capsys
) -> None:
    zeroed = tmp_path / "zeroed"
    shutil.copytree(artifact, zeroed)
    manifest = json.loads((zeroed / "manifest.json").read_text())
    (zeroed / "manifest.json").write_text(json.dumps({**manifest, "sha256": "0" * 64}))
    before = snapshot(zeroed)
    assert main(["validate", str(zeroed), "--images", "1"]) == 2
    assert_one_red_line(capsys, "model.onnx does not match its manifest (sha256")
    assert snapshot(zeroed) == before


def test_serve_refuses_another_models_onnx(artifact: Path, tmp_path: Path, capsys) -> None:
    from attn_deploy.serve.model_pool import ModelPool, ServeOptions
    from tests._serve_helpers import make_artifact

    other = make_artifact(tmp_path / "tiny" / "ort-fp32", name="tiny-gate")
    swapped = tmp_path / "swapped"
    shutil.copytree(artifact, swapped)
    shutil.copyfile(other / "model.onnx", swapped / "model.onnx")
    with pytest.raises(InputError, match="does not match its manifest"):
        ModelPool([swapped], ServeOptions())
    assert main(["serve", str(swapped), "--port", "0"]) == 2
    assert_one_red_line(capsys, "does not match its manifest")


def test_the_manifest_records_the_graph_opset(artifact: Path) -> None:
    import onnx

    from attn_deploy.export.artifact import graph_opset

    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["opset"] == graph_opset(artifact / "model.onnx") == 18
    assert onnx.load(str(artifact / "model.onnx")).opset_import[0].version == 18


def test_an_opset_the_dynamo_exporter_cannot_produce_falls_back_to_torchscript(
    tmp_path: Path, caplog
) -> None:
    """onnxscript cannot down-convert this graph to opset 17 and leaves 18: that counts as the dynamo exporter's
    failure, and the TorchScript exporter writes 17 (it was refused, and export_onnx reported 17 for an 18)."""
    import logging

    import torch

    from attn_deploy.export.artifact import export_artifact, graph_opset
    from attn_deploy.export.request import ExportRequest
    from tests._serve_helpers import TinyGate

    out = tmp_path / "tiny" / "ort-fp32"
    art, result = export_artifact(
        TinyGate().eval(), torch.randn(1, 3, 16, 16), out, ExportRequest.of("tiny", opset=17)
    )
    assert graph_opset(art.onnx_path) == 17 == result.opset and result.exporter == "torchscript"
    assert result.parity.passed
    noise = [r.getMessage()[:80] for r in caplog.records if r.levelno >= logging.WARNING]
    assert not noise, "onnxscript's converter logged a traceback"


# ------------------------------------------------------------------------------------- the safety net


@pytest.mark.parametrize(
    ("error", "needle"),
    [
        (PermissionError(13, "Permission denied", "/x/y"), "Permission denied (/x/y)"),
        (NotADirectoryError(20, "Not a directory", "/x"), "Not a directory (/x)"),
        (OSError(28, "No space left on device"), "No space left on device"),
        (MemoryError(), "out of memory"),
    ],
)
def test_system_refusals_are_one_line(error: BaseException, needle: str, monkeypatch, capsys) -> None:
    import attn_deploy.commands.list_models as list_models

    def refuse(args) -> int:
        raise error

    monkeypatch.setattr(list_models, "run", refuse)
    assert main(["list"]) == 2
    assert_one_red_line(capsys, needle)


def test_a_bug_keeps_its_traceback(monkeypatch) -> None:
    import attn_deploy.commands.list_models as list_models

    def bug(args) -> int:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(list_models, "run", bug)
    with pytest.raises(ZeroDivisionError):
        main(["list"])


# ------------------------------------------------------------------------------------- interruption


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_staging_of_dead_processes_is_removed_and_live_ones_kept(tmp_path: Path) -> None:
    parent = tmp_path / "engines" / MODEL
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as other:
        time.sleep(0.1)  # its staging below is written after it started
        dead, live, mine = _dead_pid(), other.pid, os.getpid()
        stale_dir = parent / f".ort-fp32.new-{dead}-abcd1234"
        stale_file = parent / f".manifest.json.tmp-{dead}-abcd1234.tmp"
        live_dir = parent / f".ort-fp16.new-{live}-abcd1234"
        reused = parent / f".trt-fp16.new-{live}-abcd1234"  # written an hour before that process started
        earlier_me = parent / f".trt-int8.new-{mine}-abcd1234"  # a previous process with this pid
        aside = parent / f".ort-int8.old-{dead}-abcd1234" / "ort-int8"  # moved aside, never replaced
        for folder in (stale_dir, live_dir, reused, earlier_me, aside):
            folder.mkdir(parents=True)
            (folder / "manifest.json").write_text("{}")
        stale_file.write_text("half")
        os.utime(reused, (time.time() - 3600, time.time() - 3600))
        with staged_directory(parent / "ort-fp32") as staging:
            (staging / "manifest.json").write_text("{}")
        other.kill()
    assert sorted(p.name for p in parent.iterdir()) == [live_dir.name, "ort-fp32", "ort-int8"]
    assert (parent / "ort-int8" / "manifest.json").is_file(), "the old artifact is restored, not lost"


def test_a_failed_swap_keeps_the_old_artifact(tmp_path: Path, monkeypatch) -> None:
    final = tmp_path / MODEL / "ort-fp32"
    final.mkdir(parents=True)
    (final / "manifest.json").write_text("old")
    replace = os.replace

    def disk_full_on_swap(src, dst) -> None:
        if Path(dst) == final and ".new-" in Path(src).name:
            raise OSError(28, "No space left on device")
        replace(src, dst)

    monkeypatch.setattr(os, "replace", disk_full_on_swap)
    with pytest.raises(OSError, match="No space left"), staged_directory(final) as staging:
        (staging / "manifest.json").write_text("new")
    assert (final / "manifest.json").read_text() == "old"
    assert [p.name for p in final.parent.iterdir()] == ["ort-fp32"]


def test_sigkill_leaves_staging_that_the_next_write_removes(tmp_path: Path) -> None:
    final = tmp_path / "engines" / MODEL / "ort-fp32"
    script = f"""
        import sys, time
        from attn_deploy.artifacts import staged_directory
        with staged_directory({str(final)!r}) as staging:
            (staging / "model.onnx").write_bytes(b"half")
            print(staging, flush=True)
            time.sleep(60)
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    staging = Path(proc.stdout.readline().strip())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert staging.is_dir() and staging.name.startswith(f".ort-fp32.new-{proc.pid}-")
    with staged_directory(final) as new:
        (new / "manifest.json").write_text("{}")
    assert [p.name for p in final.parent.iterdir()] == ["ort-fp32"]


SIGNAL_SCRIPT = """
    import os, signal, sys, time
    from pathlib import Path
    from attn_deploy.cli import announce_interrupt
    from attn_deploy.artifacts import staged_directory
    from attn_deploy.fsutil import critical_section, exit_on_signals, scratch_dir
    final, mode = Path(sys.argv[1]), sys.argv[2]
    with exit_on_signals(announce_interrupt), staged_directory(final) as staging, scratch_dir("t-") as scratch:
        (staging / "manifest.json").write_text("{}")
        (scratch / "model.fp32.onnx").write_bytes(b"a private copy")  # as the INT8 stage keeps one
        print(scratch, flush=True)
        if mode == "critical":
            with critical_section():
                os.kill(os.getpid(), signal.SIGINT)
                (final.parent / "after-signal").write_text("the block ran to its end")
        print("ready", flush=True)
        time.sleep(60)
"""


@pytest.mark.parametrize(
    ("mode", "sig"), [("plain", signal.SIGINT), ("plain", signal.SIGTERM), ("critical", signal.SIGINT)]
)
def test_a_signal_exits_128_plus_it_and_removes_staging_and_scratch(
    tmp_path: Path, mode: str, sig: signal.Signals
) -> None:
    final = tmp_path / MODEL / "ort-fp32"
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SIGNAL_SCRIPT), str(final), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    scratch = Path(proc.stdout.readline().strip())
    if mode == "plain":
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig
    assert scratch.name.startswith("t-") and not scratch.exists(), "scratch folders go too"
    assert err.strip() == f"interrupted ({sig.name}); nothing half-written was left"
    if mode == "critical":  # the block ran to its end, then the staging went
        assert sorted(p.name for p in final.parent.iterdir()) == ["after-signal"]
    else:
        assert not final.parent.exists(), "no staging, and no folder made for it"


STAGE_SIGNAL_SCRIPT = """
    import os, signal, sys, threading
    from contextlib import contextmanager
    import attn_deploy.commands.export as export_command
    from attn_deploy.cli import main

    @contextmanager
    def stage_progress(title):
        def on_stage(name):  # Ctrl-C 0.1 s into the stage: inside torch / ONNX Runtime work (each stage of
            if name == sys.argv[1]:  # this export takes longer than that, even verify on a fast machine)
                threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT)).start()
        yield on_stage

    export_command.stage_progress = stage_progress
    sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["build model", "trace", "verify"])
def test_ctrl_c_in_any_export_stage_exits_130_cleanly(tmp_path: Path, stage: str) -> None:
    out = tmp_path / "engines"
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(STAGE_SIGNAL_SCRIPT), stage, *EXPORT, "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 130, proc.stderr  # not -6 (SIGABRT) nor a KeyboardInterrupt traceback
    assert proc.stderr.strip().splitlines() == ["interrupted (SIGINT); nothing half-written was left"]
    if out.exists():  # a fast machine finished the stage (and the write) before the signal: then it is whole
        artifact = out / "resnet18-se" / "ort-fp32"
        manifest = json.loads((artifact / "manifest.json").read_text())
        assert manifest["sha256"] == hashlib.sha256((artifact / "model.onnx").read_bytes()).hexdigest()
        assert not [p for p in out.rglob(".*")], "no staging left beside it"
    # else: no staging, and no folder made for it
