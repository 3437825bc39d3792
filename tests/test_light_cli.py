"""A light CLI: parsing, ``--help``, ``list``, ``config``, ``serve`` and ``triton-repo`` never import torch or the
export stack.

Each check runs in a fresh interpreter (``sys.executable -c``) so ``sys.modules`` holds only what that
command imported; the artifacts are exported here, in the test process, and handed over by path.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests._serve_helpers import make_artifact

HEAVY = ("torch", "onnxslim", "onnxscript", "onnxruntime.quantization", "matplotlib", "polygraphy")
"""Modules that only exporting, validating or benchmarking may import."""

PRELUDE = f"""
    import json, sys, time
    HEAVY = {HEAVY!r}

    def report(**extra):
        print(json.dumps({{"heavy": [m for m in HEAVY if m in sys.modules], **extra}}))
"""


def run_python(body: str, *args: str, timeout: float = 120.0) -> dict:
    """Run PRELUDE + ``body`` in a fresh interpreter; the JSON of its last stdout line (from ``report``)."""
    code = textwrap.dedent(PRELUDE) + textwrap.dedent(body)
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny dynamic-batch ONNX artifact (exported with torch, in this process only)."""
    return make_artifact(tmp_path_factory.mktemp("light") / "tiny-gate" / "ort-fp32")


def test_parsing_every_command_imports_nothing_heavy() -> None:
    result = run_python(
        """
        from attn_deploy.cli import build_parser

        parser = build_parser()
        for argv in (
            ["list"],
            ["export", "--model", "yolov8n-eca", "--dynamic"],
            ["validate", "engines/m/ort-fp32", "--backend", "ort-cpu"],
            ["bench", "--model", "yolov8n-eca", "--backends", "ort"],
            ["serve", "engines/m/ort-fp32", "--port", "0"],
            ["triton-repo", "engines/m/ort-fp32", "--out", "repo"],
            ["config", "ort-int8", "--json"],
        ):
            parser.parse_args(argv)
        report()
        """
    )
    assert result["heavy"] == []


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"]])
def test_help_is_light(argv: list[str]) -> None:
    result = run_python(
        """
        start = time.perf_counter()
        from attn_deploy.cli import main

        try:
            main(sys.argv[1:])
        except SystemExit as exc:
            code = exc.code
        report(code=code, seconds=time.perf_counter() - start)
        """,
        *argv,
    )
    print(f"attn-deploy {' '.join(argv)}: {result['seconds']:.2f} s (import + parse + help)")
    assert result["code"] == 0
    assert result["heavy"] == []


def test_serve_answers_without_torch(artifact: Path) -> None:
    """``attn-deploy serve`` in the main thread; a thread asks /v2/health/ready, then sends SIGINT."""
    result = run_python(
        """
        import os, signal, socket, threading, urllib.request
        from attn_deploy.cli import main

        with socket.socket() as s:  # a free port (the server binds it a moment later)
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        start = time.perf_counter()
        seen = {}

        def ask_then_stop():
            deadline = time.monotonic() + 60
            try:
                while time.monotonic() < deadline and "status" not in seen:
                    try:
                        url = f"http://127.0.0.1:{port}/v2/health/ready"
                        with urllib.request.urlopen(url, timeout=5) as response:
                            seen["status"] = response.status
                            seen["seconds"] = time.perf_counter() - start
                    except OSError:
                        time.sleep(0.05)
            finally:
                os.kill(os.getpid(), signal.SIGINT)  # graceful stop, also when never ready

        threading.Thread(target=ask_then_stop, daemon=True).start()
        code = main(["serve", sys.argv[1], "--port", str(port), "--threads", "1"])
        report(code=code, **seen)
        """,
        str(artifact),
    )
    print(f"attn-deploy serve: ready in {result.get('seconds', float('nan')):.2f} s")
    assert result.get("status") == 200
    assert result["code"] == 0
    assert result["heavy"] == []


def test_list_and_config_run_without_torch() -> None:
    # `list` prints a static table (attn_deploy/data/zoo_table.json): no model is built, torch never loads
    result = run_python(
        """
        from attn_deploy.cli import main

        start = time.perf_counter()
        codes = [main(["list", "-q"]), main(["config", "trt-int8", "-q"])]
        report(codes=codes, seconds=time.perf_counter() - start)
        """
    )
    print(f"attn-deploy list + config: {result['seconds']:.2f} s after import")
    assert result["codes"] == [0, 0]
    assert result["heavy"] == []


def test_triton_repo_without_torch(artifact: Path, tmp_path: Path) -> None:
    result = run_python(
        """
        from attn_deploy.cli import main

        code = main(["triton-repo", sys.argv[1], "--out", sys.argv[2]])
        report(code=code)
        """,
        str(artifact),
        str(tmp_path / "repo"),
    )
    assert result["code"] == 0
    assert result["heavy"] == []
    assert (tmp_path / "repo" / "tiny-gate" / "config.pbtxt").is_file()
