"""mAP of the trained yolov8n-* detectors in every precision: PyTorch FP32, ORT FP32, FP16, INT8 (issue 11).

    python -m benchmarks.map_table [--attentions none ema ...] [--calib-images 32]

Reads the weights ``benchmarks/train_detectors.py`` wrote (``build/trained/``) and its dataset. Per attention:
the model exported to ONNX (verified against PyTorch), then ONNX Runtime CPU runs the FP32 graph, the FP16 graph
(:func:`~attn_deploy.precision.fp16.convert_fp16`) and INT8 graphs (``ort-int8`` settings, calibrated on
``--calib-images`` train images), all scored on the val split with ``yolo val``'s postprocess (COCO mAP50,
mAP50-95, AP small). INT8 variants: plain post-training quantization, then, for a model whose plain INT8 loses
more than 1 point of mAP50-95, the variants that keep sensitive parts in float. Latency: p50 of one image on
ONNX Runtime CPU, the graphs of one model interleaved (so contention hits them alike). Also checks the seed
article's claim that EMA helps small objects most. Writes ``benchmarks/results/map.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from attn_deploy import create_model
from attn_deploy.data.preprocess import to_tensor
from attn_deploy.data.yolo_dataset import load_data_yaml, load_split
from attn_deploy.errors import ExportError
from attn_deploy.fsutil import write_json, write_text, write_with
from attn_deploy.markdown import markdown_table
from attn_deploy.precision.calibration import CalibrationSet
from attn_deploy.precision.fp16 import convert_fp16
from attn_deploy.precision.int8 import quantize_int8
from attn_deploy.validate.detection_eval import score_outputs
from benchmarks.int8_trained import int8_config
from benchmarks.precision_eval import _latency, export_graph, graph_outputs, reference_outputs
from benchmarks.train_detectors import ATTENTIONS, DATA, RESULTS, weights_path

SEED_FIGURES = Path("/work/shared/seed-article-figures.json")
SEED_CLAIM = {"none": {"ap_small": 23.5}, "ema": {"ap_small": 27.3}}  # the seed's ema-small-objects table
INT8_TARGET = 0.01  # mAP50-95 drop allowed (1 point)
INT8_VARIANTS: dict[str, dict[str, Any]] = {
    "int8": {},
    "int8, gates float": {"keep_gates_fp": True},
    "int8, every Concat float": {"exclude_op_types": ("Concat",)},
    "int8, entropy calibration": {"calibration": "entropy"},
    "int8, minmax calibration": {"calibration": "minmax"},
    "int8, leading layers float (cosine 0.999)": {"fallback_cosine": 0.999},
    "int8, 2 most sensitive layers float": {"sensitive_float": 2},
    "int8, 4 most sensitive layers float": {"sensitive_float": 4},
    "int8, 8 most sensitive layers float": {"sensitive_float": 8},
}
"""``ort-int8`` overrides: plain PTQ first; the others run only when plain PTQ misses the 1-point target."""


def evaluate(
    attention: str,
    data_yaml: Path,
    imgsz: int,
    calib_images: int,
    tmp: Path,
    variants: list[str] | None = None,
) -> dict[str, Any]:
    """Every precision of ``yolov8n-<attention>``: mAP, AP small, latency, INT8 variant details."""
    dataset = load_data_yaml(data_yaml)
    model = create_model(f"yolov8n-{attention}", weights=weights_path(attention))
    val_images, truths = load_split(dataset, "val", (imgsz, imgsz))
    inputs = to_tensor(val_images)
    calib_raw, _ = load_split(dataset, "train", (imgsz, imgsz), calib_images)
    calib = CalibrationSet(
        model.spec.input_name, to_tensor(calib_raw), f"train split ({calib_images} images)"
    )
    out_name = model.spec.output_names[0]

    def metrics(outputs: np.ndarray) -> dict[str, Any]:
        return score_outputs(outputs, truths, dataset.num_classes).to_dict(dataset.names)

    rows: dict[str, dict[str, Any]] = {}
    with torch.inference_mode():
        rows["PyTorch FP32"] = metrics(reference_outputs(model, inputs)[out_name])
    proto = export_graph(model, torch.from_numpy(inputs[:1]), tmp)
    graphs: dict[str, onnx.ModelProto] = {"ORT FP32": proto, "ORT FP16": convert_fp16(proto)[0]}
    for label, graph in graphs.items():
        rows[label] = metrics(graph_outputs(model, graph, inputs)[out_name])
    int8_details: dict[str, Any] = {}
    for variant, overrides in INT8_VARIANTS.items():
        if variants is not None and overrides and variant not in variants:
            continue
        if overrides and rows["ORT FP32"]["map50_95"] - rows["ORT INT8"]["map50_95"] <= INT8_TARGET:
            break  # plain PTQ is within the target: no float fallback needed
        config = dataclasses.replace(int8_config({}), **overrides)
        try:
            quantized, report = quantize_int8(proto, calib, config, cache_dir=tmp)
        except ExportError as exc:  # a fallback that cannot reach its cosine: say so, try the next
            int8_details[f"ORT {variant}"] = {"error": str(exc)}
            continue
        label = "ORT INT8" if not overrides else f"ORT {variant}"
        graphs[label] = quantized
        rows[label] = metrics(graph_outputs(model, quantized, inputs)[out_name])
        int8_details[label] = {
            "overrides": {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()},
            "float_nodes": len(report.excluded_nodes)
            + len(report.fallback_nodes)
            + len(report.sensitive_nodes),
            "fallback_layers": report.fallback_nodes + report.sensitive_nodes,
            "channel_error": report.channel_error,
            "qdq_nodes": report.qdq_nodes,
            "calibration": report.method,
        }
    latency = _latency(graphs, model.spec.input_name, inputs[:1])
    for label, ms in latency.items():
        rows[label]["p50_ms"] = ms
    return {"model": f"yolov8n-{attention}", "imgsz": imgsz, "rows": rows, "int8": int8_details}


def seed_claim(results: dict[str, Any]) -> dict[str, Any]:
    """EMA vs no attention, AP small (PyTorch FP32), against the seed article's +3.8 points."""
    ours = {
        k: results[f"yolov8n-{k}"]["rows"]["PyTorch FP32"]
        for k in ("none", "ema")
        if f"yolov8n-{k}" in results
    }
    claim = SEED_CLAIM["ema"]["ap_small"] - SEED_CLAIM["none"]["ap_small"]
    if len(ours) < 2 or ours["none"]["ap_small"] is None or ours["ema"]["ap_small"] is None:
        return {
            "seed_delta_ap_small": round(claim, 1),
            "ours": None,
            "verdict": "not measured (a model is missing)",
        }
    delta = 100 * (ours["ema"]["ap_small"] - ours["none"]["ap_small"])
    others = {
        k: 100 * (ours["ema"][k] - ours["none"][k])
        for k in ("ap_medium", "map50_95")
        if ours["ema"][k] is not None
    }
    most = delta >= max(others.values(), default=-np.inf)
    verdict = (
        f"EMA {'raises' if delta > 0 else 'lowers'} AP_small by {abs(delta):.1f} points against no attention "
        f"(seed: +{claim:.1f}); "
        + ("small objects gain the most" if delta > 0 and most else "small objects do not gain the most")
        + " on our data (one training run each, so differences of a point or two are within run-to-run noise)."
    )
    return {
        "seed_delta_ap_small": round(claim, 1),
        "ours_delta_ap_small": round(delta, 2),
        "ours_delta_other": {k: round(v, 2) for k, v in others.items()},
        "verdict": verdict,
    }


def markdown(results: dict[str, Any], claim: dict[str, Any], meta: dict[str, Any]) -> str:
    """The results as Markdown: one table per model, the INT8 notes, the seed claim."""
    lines = [
        "# Detection accuracy of trained yolov8n-* in every precision (mAP, ONNX Runtime CPU)\n",
        meta["note"],
        "",
    ]
    table_rows = []
    for name, entry in results.items():
        fp32 = entry["rows"]["PyTorch FP32"]["map50_95"]
        for label, r in entry["rows"].items():
            drop = None if r["map50_95"] is None or fp32 is None else 100 * (fp32 - r["map50_95"])
            table_rows.append(
                [
                    name,
                    label,
                    _pct(r["map50"]),
                    _pct(r["map50_95"]),
                    "-" if drop is None else f"{drop:+.2f}",
                    _pct(r["ap_small"]),
                    _pct(r["ap_medium"]),
                    r.get("p50_ms", "-"),
                ]
            )
    header = [
        "model",
        "precision",
        "mAP50",
        "mAP50-95",
        "drop vs PyTorch (pts)",
        "AP small",
        "AP medium",
        "p50 ms",
    ]
    lines += [markdown_table(header, table_rows), ""]
    lines.append("INT8 variants (``ort-int8``: uint8 asymmetric activations, int8 per-channel weights):\n")
    for name, entry in results.items():
        for label, d in entry["int8"].items():
            if "error" in d:
                lines.append(f"- {name} {label}: {d['error']}")
                continue
            lines.append(
                f"- {name} {label}: {d['qdq_nodes']} Q/DQ nodes, {d['float_nodes']} nodes kept in float "
                f"({', '.join(d['fallback_layers'][:8]) or 'none by fallback'}), calibration {d['calibration']}"
            )
    lines += ["", f"EMA and small objects: {claim['verdict']}", ""]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    """Bar chart: mAP50-95 per model and precision."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    labels = sorted({label for e in results.values() for label in e["rows"]}, key=_order)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(names)), 4))
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        values = [100 * (results[n]["rows"].get(label, {}).get("map50_95") or 0) for n in names]
        ax.bar(np.arange(len(names)) + i * width, values, width, label=label)
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names)
    ax.set_ylabel("mAP50-95 (%)")
    ax.set_title("Trained yolov8n on the synthetic set: mAP50-95 per precision (val)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def _order(label: str) -> tuple[int, str]:
    return (
        ["PyTorch FP32", "ORT FP32", "ORT FP16", "ORT INT8"].index(label)
        if label in ("PyTorch FP32", "ORT FP32", "ORT FP16", "ORT INT8")
        else 4,
        label,
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attentions", nargs="+", default=list(ATTENTIONS), choices=ATTENTIONS)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--calib-images", type=int, default=32)
    parser.add_argument("--imgsz", type=int, default=128, help="the size the detectors were trained at")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=None,
        choices=list(INT8_VARIANTS)[1:],
        help="INT8 fallbacks to try (default all)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    stored = RESULTS / "map.json"
    results: dict[str, Any] = {}
    for attention in args.attentions:
        if not weights_path(attention).is_file():
            print(f"skip yolov8n-{attention}: no trained weights (python -m benchmarks.train_detectors)")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            results[f"yolov8n-{attention}"] = evaluate(
                attention, args.data / "data.yaml", args.imgsz, args.calib_images, Path(tmp), args.variants
            )
        print(
            json.dumps({k: v["map50_95"] for k, v in results[f"yolov8n-{attention}"]["rows"].items()}),
            flush=True,
        )
    if stored.is_file():  # read again: a run beside this one may have added models meanwhile
        results = {**json.loads(stored.read_text())["models"], **results}
    results = dict(sorted(results.items(), key=lambda item: ATTENTIONS.index(item[0].split("-", 1)[1])))
    claim = seed_claim(results)
    meta = {
        "data": str(args.data.relative_to(RESULTS.parent.parent))
        if args.data.is_absolute()
        else str(args.data),
        "calibration": f"{args.calib_images} train images",
        "runtime": "onnxruntime CPU, 1 thread for accuracy; latency p50 of one image, interleaved",
        "note": (
            "Val split of the synthetic detection set (`attn-deploy make-data --task detect`), scored with "
            "yolo val's postprocess (conf 0.001, NMS IoU 0.7, 300 boxes) and COCO mAP (checked against "
            "pycocotools in tests/test_map.py); values in percent. Every session runs 1 thread; two models were "
            "evaluated at a time on an otherwise idle 2-core machine (Intel Xeon with AVX-512, VNNI, AMX), so "
            "latencies compare within one model (its graphs timed interleaved)."
        ),
    }
    write_json(stored, {"meta": meta, "models": results, "seed_claim": claim})
    write_text(RESULTS / "map.md", markdown(results, claim, meta))
    plot(results, RESULTS / "map.png")


if __name__ == "__main__":
    main()
