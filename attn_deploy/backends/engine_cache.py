"""TensorRT engine cache: a serialized engine is reused only for the exact ONNX, TensorRT, GPU and settings.

A TensorRT plan is tied to the TensorRT version and the GPU it was built on, and to the build settings
(profiles, workspace, optimization level). The key hashes all of them together with the ONNX file's sha256,
so a changed model, driver-side upgrade of TensorRT, another GPU or another profile never loads a stale
engine: it simply misses and builds anew. Everything here is plain CPU code.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attn_deploy.config import default_cache_dir
from attn_deploy.fsutil import write_bytes, write_json


def engine_cache_key(onnx_sha256: str, tensorrt_version: str, gpu: str, settings: dict[str, Any]) -> str:
    """sha256 over (ONNX sha256, TensorRT version, GPU name + compute capability, build settings)."""
    payload = {"onnx": onnx_sha256, "tensorrt": tensorrt_version, "gpu": gpu, "settings": settings}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=list).encode()).hexdigest()


@dataclass(frozen=True)
class EngineCache:
    """A folder of ``<key>.plan`` engines, each with a ``<key>.json`` saying what it was built from."""

    folder: Path

    @classmethod
    def at(cls, folder: str | os.PathLike[str] | None = None) -> EngineCache:
        """The cache in ``folder`` (default: ``$XDG_CACHE_HOME/attn-deploy/engines``)."""
        return cls(Path(folder) if folder is not None else default_cache_dir("engines"))

    def plan_path(self, key: str) -> Path:
        """Where the engine for ``key`` is stored."""
        return self.folder / f"{key}.plan"

    def load(self, key: str) -> bytes | None:
        """The cached engine for ``key``, or ``None`` (a missing or empty file is a miss)."""
        path = self.plan_path(key)
        data = path.read_bytes() if path.is_file() else b""
        return data or None

    def save(self, key: str, plan: bytes, info: dict[str, Any]) -> Path:
        """Store ``plan`` under ``key`` with its description ``info`` (atomically)."""
        write_json(self.folder / f"{key}.json", {"key": key, **info})
        return write_bytes(self.plan_path(key), plan)
