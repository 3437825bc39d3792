"""Reading an Ultralytics yolov8m checkpoint safely: time and memory (issue 10 target: < 3 s, < 2x the file size).

    python -m benchmarks.checkpoint_read [--repeats 5]

Writes a yolov8m ``best.pt`` in Ultralytics' layout (FP16, ``tests/ultralytics_layout.py``), then in a fresh
child process per repeat measures: reading it with the restricted unpickler and taking its state_dict, nc, names,
yaml and strides (:func:`attn_deploy.models.ultralytics.read_ultralytics`), and separately building the network
with the weights loaded (:func:`attn_deploy.models.ultralytics_yaml.build_ultralytics`); peak resident memory
(``VmHWM`` after resetting it through ``/proc/self/clear_refs``, Linux) above the child's RSS after its imports
(mapped checkpoint pages that were read count). ``torch.load(weights_only=False)`` of the same file
(what ``--trust-checkpoint`` does, with the pickled classes importable) is timed alongside, interleaved, as the
yardstick. Writes ``results/checkpoint_read.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from attn_deploy.fsutil import write_json, write_text
from attn_deploy.markdown import markdown_table

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent

_CHILD = r"""
import json, sys, time
sys.path.insert(0, {root!r})
import torch
from attn_deploy.models.ultralytics import read_ultralytics
from attn_deploy.models.ultralytics_yaml import build_ultralytics
from tests.ultralytics_layout import fake_ultralytics
torch.set_num_threads(1)
mode, path = sys.argv[1], sys.argv[2]
def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))
base = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets VmHWM (the peak RSS) to the current RSS: Linux proc(5)
start = time.perf_counter()
if mode == "read":
    ckpt = read_ultralytics(path)
    touched = sum(float(t.float().sum()) for t in ckpt.state.values())  # every tensor's bytes actually read
elif mode == "build":
    model, arch = build_ultralytics(read_ultralytics(path))
else:
    with fake_ultralytics():
        obj = torch.load(path, map_location="cpu", weights_only=False)
seconds = time.perf_counter() - start
peak = status("VmHWM")
print(json.dumps({{"seconds": seconds, "peak_rss_mb": (peak - base) / 1024}}))
"""


def measure(mode: str, path: Path) -> dict[str, float]:
    """One fresh process: ``mode`` (read / build / torch.load) of ``path``; seconds and peak RSS growth (MB)."""
    code = _CHILD.format(root=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", code, mode, str(path)], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from tests.ultralytics_layout import build_model, save_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(build_model("m", 80), Path(tmp) / "best.pt")
        size_mb = path.stat().st_size / 2**20
        modes = ("read", "build", "torch.load")
        runs: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
        for _ in range(args.repeats):  # interleaved: contention hits every mode alike
            for mode in modes:
                runs[mode].append(measure(mode, path))
    summary: dict[str, Any] = {
        "checkpoint": "yolov8m, nc 80, FP16, Ultralytics layout (best.pt after strip_optimizer)",
        "file_mb": round(size_mb, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "caveat": "measured on a shared 2-core machine with other jobs running (load average > 10): times are "
        "upper bounds; medians of interleaved fresh-process runs",
        "targets": {"read_seconds": 3.0, "read_peak_rss_x_file": 2.0},
        "modes": {
            mode: {
                "median_seconds": round(statistics.median(r["seconds"] for r in rs), 3),
                "max_seconds": round(max(r["seconds"] for r in rs), 3),
                "median_peak_rss_mb": round(statistics.median(r["peak_rss_mb"] for r in rs), 1),
                "max_peak_rss_mb": round(max(r["peak_rss_mb"] for r in rs), 1),
                "runs": rs,
            }
            for mode, rs in runs.items()
        },
    }
    read = summary["modes"]["read"]
    summary["met"] = {
        "read_under_3s": read["max_seconds"] < 3.0,
        "read_under_2x_file": read["max_peak_rss_mb"] < 2 * size_mb,
    }
    RESULTS.mkdir(exist_ok=True)
    write_json(RESULTS / "checkpoint_read.json", summary)
    labels = {
        "read": "read_ultralytics (restricted unpickler, every tensor read)",
        "build": "read + build_ultralytics (network built, weights loaded, FP32)",
        "torch.load": "torch.load(weights_only=False) (--trust-checkpoint; yardstick)",
    }
    rows = [
        [labels[m], v["median_seconds"], v["max_seconds"], v["median_peak_rss_mb"], v["max_peak_rss_mb"]]
        for m, v in summary["modes"].items()
    ]
    text = "\n".join(
        [
            "# Reading an Ultralytics checkpoint without running its code\n",
            f"{summary['checkpoint']}: {summary['file_mb']} MB. {args.repeats} fresh processes per mode, interleaved; "
            "peak RSS is the growth of `VmHWM` (reset before the read) above the RSS after imports; pages of the "
            "mapped file that were read count.\n",
            markdown_table(["what", "median s", "max s", "median peak RSS MB", "max peak RSS MB"], rows),
            f"Targets: read under 3 s: {'met' if summary['met']['read_under_3s'] else 'MISSED'}; "
            f"peak memory under 2x the file ({2 * size_mb:.0f} MB): "
            f"{'met' if summary['met']['read_under_2x_file'] else 'MISSED'} (worst run of each).\n",
            f"Machine: {summary['machine']}. {summary['caveat']}.\n",
        ]
    )
    write_text(RESULTS / "checkpoint_read.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
