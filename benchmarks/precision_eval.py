"""Precision measurements on the zoo, stored in benchmarks/results/.

    python -m benchmarks.precision_eval fp16 [--models resnet18-ema yolov8s-eca ...]
    python -m benchmarks.precision_eval int8 [--models resnet50-se ...] [--methods percentile entropy minmax]

``fp16``: every zoo model (default) exported at its default size, converted with the FP16 policy, run by ONNX
Runtime CPU against PyTorch FP32 on synthetic images -> ``fp16_cosine.json`` / ``.md``.

``int8``: resnet50-{se,cbam,eca,ema} and yolov8s-eca; calibrated on the synthetic set (seed 0), evaluated on
other synthetic images (seed 1000); both attention-gate placements (gates quantized vs kept in float) for each
calibration method -> ``int8_placement.json`` / ``.md``. Calibration is cached, so the two placements of one
method calibrate once.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from rich.console import Console
from rich.progress import Progress

from attn_deploy import create_model, export_onnx, list_models
from attn_deploy.backends.ort import OrtRunner
from attn_deploy.backends.torch_runner import TorchRunner
from attn_deploy.config import Fp16Config, Int8Config
from attn_deploy.data.preprocess import PreprocessSpec
from attn_deploy.data.synthetic import synthetic_images
from attn_deploy.fsutil import write_json, write_text
from attn_deploy.precision.calibration import calibration_set
from attn_deploy.precision.fp16 import convert_fp16
from attn_deploy.precision.int8 import quantize_int8
from attn_deploy.report import markdown_table
from attn_deploy.validate.classification import top1_agreement
from attn_deploy.validate.detection import box_agreement
from attn_deploy.validate.parity import compare_outputs
from attn_deploy.validate.validation import compare_runners, evaluation_images

RESULTS = Path(__file__).resolve().parent / "results"
INT8_MODELS = ("resnet50-se", "resnet50-cbam", "resnet50-eca", "resnet50-ema", "yolov8s-eca")
EVAL_SEED = 1000
console = Console()


def _export(name: str, folder: Path) -> tuple[Any, PreprocessSpec, onnx.ModelProto]:
    """Zoo model ``name`` exported (verified) at its default size, with its preprocessing."""
    model = create_model(name)
    spec = model.spec
    preprocess = PreprocessSpec(spec.preprocess, spec.input_size, spec.mean, spec.std)
    sample = spec.normalize(synthetic_images(1, spec.input_size, seed=1234))
    path = folder / f"{name}.onnx"
    export_onnx(model, sample, path, input_names=[spec.input_name], output_names=list(spec.output_names))
    return model, preprocess, onnx.load(str(path))


def _evaluate(model: Any, proto: onnx.ModelProto, preprocess: PreprocessSpec, count: int) -> dict[str, Any]:
    spec = model.spec
    inputs = evaluation_images(preprocess, count, EVAL_SEED)
    reference = TorchRunner(model, [spec.input_name], list(spec.output_names))
    result = compare_runners(reference, OrtRunner(proto.SerializeToString()), spec.input_name, inputs, 1)
    ref, cand = result.reference(), result.candidate()
    parity = compare_outputs(ref, cand, list(spec.output_names), atol=np.inf, min_cosine=0.0)
    row: dict[str, Any] = {"cosine": parity.cosine, "max_abs": parity.max_abs, "max_rel": parity.max_rel}
    first = spec.output_names[0]
    if spec.task == "classify":
        row["top1_agreement"] = top1_agreement(ref[first], cand[first])
    else:
        row["boxes"] = box_agreement(ref[first], cand[first], iou=0.9).to_dict()
        row["box_agreement"] = row["boxes"]["agreement"]
    return row


def run_fp16(models: list[str], images: int) -> None:
    """FP16 policy conversion of each model: cosine / errors vs PyTorch FP32 on ONNX Runtime CPU."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp, Progress(console=console) as progress:
        task = progress.add_task("fp16", total=len(models))
        for name in models:
            progress.update(task, description=f"fp16 {name}")
            start = time.perf_counter()
            model, preprocess, proto = _export(name, Path(tmp))
            converted, report = convert_fp16(proto, Fp16Config())
            row = {
                "model": name,
                "size": list(preprocess.size),
                **_evaluate(model, converted, preprocess, images),
            }
            row.update(fp16_nodes=report.fp16_nodes, fp32_nodes=len(report.fp32_nodes), casts=report.casts)
            row["seconds"] = round(time.perf_counter() - start, 1)
            rows.append(row)
            console.print(f"{name}: cosine {row['cosine']:.7f}")
            progress.advance(task)
    meta = {"images": images, "seed": EVAL_SEED, "runtime": "onnxruntime CPU", "reference": "PyTorch FP32"}
    write_json(RESULTS / "fp16_cosine.json", {"meta": meta, "rows": rows})
    table = markdown_table(
        ["model", "size", "cosine", "max rel", "FP16 nodes", "FP32 nodes", "casts"],
        [
            [r["model"], "x".join(map(str, r["size"])), f"{r['cosine']:.7f}", r["max_rel"], r["fp16_nodes"],
             r["fp32_nodes"], r["casts"]]
            for r in rows
        ],
    )  # fmt: skip
    worst = min(rows, key=lambda r: r["cosine"])
    write_text(
        RESULTS / "fp16_cosine.md",
        f"# FP16 (mixed-precision policy) vs PyTorch FP32, ONNX Runtime CPU\n\n{images} synthetic images per "
        f"model (seed {EVAL_SEED}). Lowest cosine: {worst['cosine']:.7f} ({worst['model']}).\n\n{table}",
    )


def run_int8(models: list[str], methods: list[str], calib_images: int, eval_images: int) -> None:
    """Both gate placements x calibration methods per model: cosine, top-1 / box agreement, Q/DQ counts."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp, Progress(console=console) as progress:
        task = progress.add_task("int8", total=len(models) * len(methods) * 2)
        for name in models:
            model, preprocess, proto = _export(name, Path(tmp))
            calib = calibration_set(model.spec.input_name, preprocess, num_images=calib_images, seed=0)
            for method in methods:
                for keep_gates in (False, True):
                    progress.update(task, description=f"int8 {name} {method} gates_fp={keep_gates}")
                    config = Int8Config(calibration=method, num_images=calib_images, keep_gates_fp=keep_gates)
                    start = time.perf_counter()
                    quantized, report = quantize_int8(proto, calib, config, cache_dir=Path(tmp) / "calib")
                    row = {"model": name, "method": method, "keep_gates_fp": keep_gates}
                    row.update(_evaluate(model, quantized, preprocess, eval_images))
                    row.update(excluded=len(report.excluded_nodes), qdq_nodes=report.qdq_nodes)
                    row["seconds"] = round(time.perf_counter() - start, 1)
                    rows.append(row)
                    metric = row.get("top1_agreement", row.get("box_agreement"))
                    console.print(
                        f"{name} {method} gates_fp={keep_gates}: cos {row['cosine']:.5f} agree {metric}"
                    )
                    progress.advance(task)
    meta = {
        "calibration": {"images": calib_images, "seed": 0, "source": "synthetic"},
        "evaluation": {"images": eval_images, "seed": EVAL_SEED},
        "runtime": "onnxruntime CPU (QDQ, symmetric, per-channel weights)",
    }
    write_json(
        RESULTS / "int8_placement.json", {"meta": meta, "rows": rows, "summary": _placement_summary(rows)}
    )
    write_text(RESULTS / "int8_placement.md", _int8_markdown(rows, meta))


def _placement_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean cosine per placement over all models and methods, and which placement wins."""
    means = {}
    for keep in (False, True):
        values = [r["cosine"] for r in rows if r["keep_gates_fp"] == keep]
        means["gates_fp" if keep else "gates_int8"] = float(np.mean(values)) if values else float("nan")
    return {"mean_cosine": means, "better": max(means, key=lambda k: means[k])}


def _int8_markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    table = markdown_table(
        ["model", "method", "gates", "cosine", "top-1 / box agreement", "Q/DQ nodes", "excluded"],
        [
            [
                r["model"],
                r["method"],
                "float" if r["keep_gates_fp"] else "int8",
                f"{r['cosine']:.5f}",
                f"{r.get('top1_agreement', r.get('box_agreement')):.1%}",
                r["qdq_nodes"],
                r["excluded"],
            ]
            for r in rows
        ],
    )
    summary = _placement_summary(rows)
    means = ", ".join(f"{k}: {v:.5f}" for k, v in summary["mean_cosine"].items())
    return (
        "# INT8 Q/DQ: attention gates quantized vs kept in float\n\n"
        f"Calibration: {meta['calibration']['images']} synthetic images (seed 0); evaluation: "
        f"{meta['evaluation']['images']} other synthetic images (seed {EVAL_SEED}); {meta['runtime']}.\n\n"
        f"Mean cosine per placement: {means}; better: **{summary['better']}**.\n\n{table}"
    )


def main(argv: list[str] | None = None) -> None:
    """Command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="what", required=True)
    fp16 = sub.add_parser("fp16")
    fp16.add_argument("--models", nargs="+", default=None)
    fp16.add_argument("--images", type=int, default=2)
    int8 = sub.add_parser("int8")
    int8.add_argument("--models", nargs="+", default=list(INT8_MODELS))
    int8.add_argument("--methods", nargs="+", default=["percentile", "entropy", "minmax"])
    int8.add_argument("--calib-images", type=int, default=32)
    int8.add_argument("--eval-images", type=int, default=40)
    args = parser.parse_args(argv)
    if args.what == "fp16":
        run_fp16(args.models or list_models(), args.images)
    else:
        run_int8(args.models, args.methods, args.calib_images, args.eval_images)
    console.print(json.dumps({"written": str(RESULTS)}))


if __name__ == "__main__":
    main()
