"""Class names of an artifact (from its manifest's ``source``): Triton's labels file and the server's metadata."""

from __future__ import annotations

from typing import Any

LABELS_FILE = "labels.txt"
"""Triton's label file (one class name per line, index = line), referenced by ``label_filename`` in config.pbtxt."""


def class_names(manifest: dict[str, Any]) -> list[str] | None:
    """The class names the model was trained with (an Ultralytics checkpoint's ``names``, a module's ``names``),
    ``None`` when the manifest records none (zoo models)."""
    source = manifest.get("source")
    names = source.get("names") if isinstance(source, dict) else None
    if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
        return names
    return None


def labels_text(names: list[str]) -> str:
    """The labels file: one name per line (line breaks inside a name become spaces, so lines stay indices)."""
    return "".join(" ".join(n.splitlines()) + "\n" for n in names)
