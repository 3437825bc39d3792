"""Every README snippet runs as written: the Python blocks in order, in one namespace, in an empty directory;
every `attn-deploy ...` line of the shell blocks parses with the real CLI parser."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from attn_deploy.cli import build_parser

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)


def blocks(language: str) -> list[str]:
    """The README's fenced code blocks in ``language``, in order."""
    return [code for lang, code in BLOCK.findall(README.read_text(encoding="utf-8")) if lang == language]


def test_python_snippets_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    snippets = blocks("python")
    assert len(snippets) >= 3
    monkeypatch.chdir(tmp_path)  # they write yolov8n-eca.onnx and engines/ here
    namespace: dict[str, object] = {"__name__": "readme"}
    for i, code in enumerate(snippets):
        exec(compile(code, f"README.md python block {i + 1}", "exec"), namespace)
    out = capsys.readouterr().out
    assert "[1, 84, 84]" in out and "['manifest.json', 'model.onnx', 'report.md']" in out


def test_shell_command_lines_parse():
    parser = build_parser()
    lines = [  # a line ending in a backslash continues on the next, as in the shell
        line
        for code in blocks("bash")
        for line in code.replace("\\\n", " ").splitlines()
        if line.startswith("attn-deploy ")
    ]
    assert len(lines) >= 15
    for line in lines:
        argv = shlex.split(line.split(" #")[0].rstrip(" &"))[1:]
        if argv in (["--version"], ["--help"]):
            continue
        parser.parse_args(argv)  # SystemExit (a usage error) fails the test
