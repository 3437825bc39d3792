"""The machine an artifact was exported, validated or benchmarked on: CPU model, architecture, ISA features,
and the versions of the libraries that shaped it.

Standard library only (``serve`` imports stay torch-free). INT8 and, less, FP16 results of ONNX Runtime CPU
depend on the kernels it picks by instruction set: u8s8 dot products use ``vpmaddubsw`` (pairs summed into
saturating int16) on AVX2 and AVX-512 without VNNI, exact int32 ``vpdpbusd`` with AVX-VNNI / AVX512-VNNI, and
AMX tiles where ``amx_int8`` exists. Manifests, ``validation.json`` and benchmark JSON record the features
below so numbers from different machines can be told apart.
"""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from attn_deploy import __version__

CPUINFO = Path("/proc/cpuinfo")

ISA_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8", "f16c", "fma")
"""The ``/proc/cpuinfo`` flags that decide ONNX Runtime's INT8/FP16 CPU kernels, in report order."""


def _cpuinfo_field(prefix: str) -> str | None:
    """The value of the first :data:`CPUINFO` line starting with ``prefix`` (``None`` where there is none)."""
    try:
        with CPUINFO.open(encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(prefix):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def isa_features() -> list[str] | None:
    """Which of :data:`ISA_FEATURES` the CPU has, or ``None`` where the flags cannot be read (non-Linux)."""
    flags = _cpuinfo_field("flags")  # x86; Arm's "Features" line holds none of ISA_FEATURES
    if flags is None:
        return [] if _cpuinfo_field("Features") is not None else None
    present = set(flags.split())
    return [name for name in ISA_FEATURES if name in present]


def describe_cpu() -> dict[str, Any]:
    """The ``machine`` block of manifests and ``validation.json``: ``{"cpu", "arch", "isa"}``."""
    return {"cpu": cpu_model(), "arch": platform.machine(), "isa": isa_features()}


_VERSIONED = ("torch", "onnx", "onnxruntime", "onnxslim", "onnxscript")


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shaped the artifact."""
    versions = {"attn_deploy": __version__, "python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
