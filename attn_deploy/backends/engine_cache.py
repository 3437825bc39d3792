"""TensorRT engine cache: a serialized engine is reused only for the exact ONNX, TensorRT, GPU and settings.

A TensorRT plan is tied to the TensorRT version, the GPU and the platform (OS and CPU architecture) it was built
on, and to the build settings (profiles, workspace, optimization level). The key hashes all of them together
with the ONNX file's sha256 and that of every external-data weight file it names, the CUDA device index used
and :data:`BUILDER_VERSION` (a stamp of our builder code), so a changed model or weight file, a TensorRT
upgrade, another GPU or platform, another profile or a change in how we build never loads a stale engine: it
simply misses and builds anew. The timing cache is keyed the same way (TensorRT refuses a cache of another
version or GPU) and written under a file lock. Everything here is plain CPU code.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from attn_deploy.config import default_cache_dir
from attn_deploy.errors import InputError
from attn_deploy.fsutil import sha256_file, write_bytes, write_json

BUILDER_VERSION = 2
"""Bump when :func:`attn_deploy.backends.tensorrt.build_engine` changes what it builds from the same inputs
(1: first version; 2: profile for every dynamic network input, keyed timing cache)."""


def host_platform() -> str:
    """OS and CPU architecture engines are built on (``"Linux-x86_64"``): plans are not portable across them."""
    return f"{platform.system()}-{platform.machine()}"


def iter_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every subgraph under it (the bodies of If, Loop, Scan), depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from iter_graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from iter_graphs(sub)


def external_data_files(model: onnx.ModelProto) -> list[str]:
    """The external-data file names (``location``) that ``model``'s tensors point to, sorted, each once."""
    locations: set[str] = set()
    for graph in iter_graphs(model.graph):
        tensors = list(graph.initializer) + [
            attr.t
            for node in graph.node
            for attr in node.attribute
            if attr.type == onnx.AttributeProto.TENSOR
        ]
        for tensor in tensors:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                locations.update(e.value for e in tensor.external_data if e.key == "location")
    return sorted(locations)


def onnx_digest(onnx_path: str | os.PathLike[str]) -> str:
    """sha256 over the ONNX file and every external-data file it names (weights > 2 GiB live outside it)."""
    path = Path(onnx_path)
    model = onnx.load(str(path), load_external_data=False)
    parts = [sha256_file(path)]
    for location in external_data_files(model):
        weights = path.parent / location
        if not weights.is_file():
            raise InputError(
                f"{path} keeps weights in '{location}', which is missing next to it; copy it there or re-export"
            )
        parts.append(f"{location}:{sha256_file(weights)}")
    return parts[0] if len(parts) == 1 else hashlib.sha256("\n".join(parts).encode()).hexdigest()


def engine_cache_key(
    onnx_sha256: str,
    tensorrt_version: str,
    gpu: str,
    settings: dict[str, Any],
    *,
    device_index: int = 0,
    platform_tag: str | None = None,
) -> str:
    """sha256 over (ONNX digest, TensorRT version, GPU name + compute capability, CUDA device index, OS/CPU
    platform, builder version, build settings)."""
    payload = {
        "onnx": onnx_sha256,
        "tensorrt": tensorrt_version,
        "gpu": gpu,
        "device_index": device_index,
        "platform": platform_tag or host_platform(),
        "builder": BUILDER_VERSION,
        "settings": settings,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=list).encode()).hexdigest()


def timing_cache_name(tensorrt_version: str, gpu: str, platform_tag: str | None = None) -> str:
    """File name of the timing cache for one TensorRT version, GPU and platform (``timing-10.13.0-...cache``).

    TensorRT refuses a timing cache written by another version or GPU (``set_timing_cache`` returns False with
    ``ignore_mismatch=False``), so one shared file would be refused, or overwritten, at every switch.
    """
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", f"{tensorrt_version}-{gpu}-{platform_tag or host_platform()}")
    return f"timing-{slug.strip('-')}.cache"


@contextmanager
def file_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock on ``<path>.lock`` (POSIX ``flock``) while the block runs: two builds that share a
    timing cache merge into it one after the other instead of overwriting each other."""
    lock = Path(f"{path}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


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
