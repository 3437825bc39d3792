"""A description of the machine a benchmark ran on: CPU and its ISA features, cores, memory, GPU, load, versions."""

from __future__ import annotations

import os
import platform
import re
from typing import Any

import onnxruntime
import torch

from attn_deploy.bench.timing import physical_cores
from attn_deploy.machine import describe_cpu, library_versions


def memory_gib() -> float | None:
    """Total RAM in GiB from ``/proc/meminfo`` (``None`` where unavailable)."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (``None`` where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def gpu_name() -> str | None:
    """The first CUDA GPU's name, or ``None``."""
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def describe_machine(threads: int | None = None) -> dict[str, Any]:
    """The ``machine`` block of benchmark results: :func:`attn_deploy.machine.describe_cpu` and more."""
    return {
        **describe_cpu(),
        "physical_cores": physical_cores(),
        "logical_cpus": os.cpu_count(),
        "memory_gib": memory_gib(),
        "gpu": gpu_name(),
        "os": f"{platform.system()} {platform.release()}",
        "threads": threads,
        "load_average": load_average(),
        "ort_providers": onnxruntime.get_available_providers(),
        "versions": library_versions(),
    }


def machine_slug(machine: dict[str, Any]) -> str:
    """A short folder-safe name: CPU vendor/family and core count (``intel-xeon-2c``), plus the GPU."""
    words = re.sub(r"\(.*?\)|processor|cpu|@.*", " ", str(machine["cpu"]).lower()).split()
    parts = [*words[:2], f"{machine['physical_cores']}c"]
    if machine.get("gpu"):
        parts.append(str(machine["gpu"]).lower().replace("nvidia", "").strip())
    return re.sub(r"[^a-z0-9]+", "-", "-".join(parts)).strip("-")
