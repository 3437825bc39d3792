"""Precision measurements on the zoo, stored in benchmarks/results/.

    python -m benchmarks.precision_eval fp16 [--models resnet18-ema yolov8s-eca ...]
    python -m benchmarks.precision_eval int8 [--models resnet50-se ...] [--methods percentile entropy minmax]

``fp16``: every zoo model (default) exported at its default size, converted with the FP16 policy, run by ONNX
Runtime CPU against PyTorch FP32 on synthetic images -> ``fp16_cosine.json`` / ``.md``.

``int8``: resnet50-{se,cbam,eca,ema} and yolov8s-eca; calibrated on the synthetic set (seed 0), evaluated on
200 other synthetic images (seed 1000); each integer format (uint8 asymmetric / int8 symmetric activations)
with the attention gates quantized or kept in float, for each calibration method -> ``int8_placement.json`` /
``.md``. Calibration is cached, so placements sharing a method and symmetry calibrate once. The zoo's weights
are untrained; ``benchmarks/int8_trained.py`` measures INT8 on trained classifiers.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from rich.progress import Progress

from attn_deploy import create_model, export_onnx, list_models
from attn_deploy.backends.ort import OrtRunner
from attn_deploy.backends.torch_runner import TorchRunner
from attn_deploy.bench.targets import ORT_BENCH_CONFIG
from attn_deploy.bench.timing import physical_cores, time_interleaved
from attn_deploy.config import Fp16Config, Int8Config, load_config
from attn_deploy.data.preprocess import PreprocessSpec
from attn_deploy.data.synthetic import synthetic_images
from attn_deploy.display import console
from attn_deploy.errors import ConfigError
from attn_deploy.export.ort_passes import channel_matmul_to_mean
from attn_deploy.fsutil import check_name, write_json, write_text
from attn_deploy.markdown import markdown_table
from attn_deploy.parity import compare_outputs
from attn_deploy.precision.calibration import calibration_set
from attn_deploy.precision.fp16 import convert_fp16
from attn_deploy.precision.int8 import quantize_int8
from attn_deploy.validate.classification import top1_agreement
from attn_deploy.validate.detection import anchor_box_agreement, box_agreement
from attn_deploy.validate.inputs import evaluation_images

RESULTS = Path(__file__).resolve().parent / "results"
INT8_MODELS = ("resnet50-se", "resnet50-cbam", "resnet50-eca", "resnet50-ema", "yolov8s-eca")
EVAL_SEED = 1000


def _export(name: str, folder: Path) -> tuple[Any, PreprocessSpec, onnx.ModelProto]:
    """Zoo model ``name`` exported (verified) at its default size, with its preprocessing; the graph every
    precision starts from, as in the precision stage of an export (the FP32-only channel-mean MatMul undone)."""
    model = create_model(name)
    spec = model.spec
    preprocess = PreprocessSpec(spec.preprocess, spec.input_size, spec.mean, spec.std)
    sample = spec.normalize(synthetic_images(1, spec.input_size, seed=1234))
    proto = export_graph(model, sample, folder)
    channel_matmul_to_mean(proto)
    return model, preprocess, proto


def export_graph(model: Any, sample: Any, folder: Path) -> onnx.ModelProto:
    """Zoo ``model`` exported (verified against PyTorch) at ``sample``'s shape into ``folder``, loaded."""
    spec = model.spec
    path = folder / f"{spec.name}.onnx"
    export_onnx(model, sample, path, input_names=[spec.input_name], output_names=list(spec.output_names))
    return onnx.load(str(path))


def reference_outputs(model: Any, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """PyTorch FP32 outputs of zoo ``model`` over ``inputs`` (batches of 8)."""
    spec = model.spec
    runner = TorchRunner(model, [spec.input_name], list(spec.output_names))
    batches = [runner.infer({spec.input_name: inputs[i : i + 8]}) for i in range(0, len(inputs), 8)]
    return {n: np.concatenate([b[n] for b in batches]) for n in spec.output_names}


def graph_outputs(model: Any, proto: onnx.ModelProto, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """Outputs of graph ``proto`` of zoo ``model`` on ONNX Runtime CPU over ``inputs``, one image at a time."""
    spec = model.spec
    runner = OrtRunner(proto.SerializeToString())
    batches = [runner.infer({spec.input_name: inputs[i : i + 1]}) for i in range(len(inputs))]
    return {n: np.concatenate([b[n] for b in batches]).astype(np.float32) for n in spec.output_names}


def score(model: Any, ref: dict[str, np.ndarray], cand: dict[str, np.ndarray]) -> dict[str, Any]:
    """Cosine and errors of ``cand`` against ``ref``, plus top-1 (with the logit margin) or box agreement."""
    spec = model.spec
    parity = compare_outputs(ref, cand, list(spec.output_names), atol=np.inf, min_cosine=0.0)
    row: dict[str, Any] = {"cosine": parity.cosine, "max_abs": parity.max_abs, "max_rel": parity.max_rel}
    first = spec.output_names[0]
    if spec.task == "classify":
        row["top1_agreement"] = top1_agreement(ref[first], cand[first])
        ordered = np.sort(ref[first], 1)
        row["median_top1_margin_sigma"] = float(
            np.median((ordered[:, -1] - ordered[:, -2]) / ref[first].std(1))
        )
    else:
        row["boxes"] = box_agreement(ref[first], cand[first], iou=0.9).to_dict()
        row["box_agreement"] = row["boxes"]["agreement"]
        row["anchor_box_agreement"] = anchor_box_agreement(ref[first], cand[first], iou=0.9)
    return row


def run_fp16(models: list[str], images: int, merge: bool = False) -> None:
    """FP16 policy conversion of each model: cosine / errors vs PyTorch FP32 on ONNX Runtime CPU.

    ``merge`` keeps the stored rows of models not measured in this run (results of several partial runs).
    """
    rows = []
    with tempfile.TemporaryDirectory() as tmp, Progress(console=console) as progress:
        task = progress.add_task("fp16", total=len(models))
        for name in models:
            progress.update(task, description=f"fp16 {name}")
            start = time.perf_counter()
            model, preprocess, proto = _export(name, Path(tmp))
            converted, report = convert_fp16(proto, Fp16Config())
            inputs = evaluation_images(preprocess, images, EVAL_SEED)
            row = {"model": name, "size": list(preprocess.size)}
            row.update(
                score(model, reference_outputs(model, inputs), graph_outputs(model, converted, inputs))
            )
            row.update(fp16_nodes=report.fp16_nodes, fp32_nodes=len(report.fp32_nodes), casts=report.casts)
            row["seconds"] = round(time.perf_counter() - start, 1)
            rows.append(row)
            console.print(f"{name}: cosine {row['cosine']:.7f}")
            progress.advance(task)
    meta = {"images": images, "seed": EVAL_SEED, "runtime": "onnxruntime CPU", "reference": "PyTorch FP32"}
    stored = RESULTS / "fp16_cosine.json"
    if merge and stored.is_file():
        measured = {r["model"] for r in rows}
        rows += [r for r in json.loads(stored.read_text())["rows"] if r["model"] not in measured]
        rows.sort(key=lambda r: r["model"])
    write_json(stored, {"meta": meta, "rows": rows})
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


# INT8 settings compared. Integer format: uint8 asymmetric activations (ONNX Runtime's fast x86 format, the
# ort-int8 default) or int8 symmetric (the only one TensorRT takes, the trt-int8 default). Placement: ONNX
# Runtime's default op set (every op it can quantize, so CPU kernels run in INT8) with the attention gates
# quantized or kept in float (or quantized but for products of two gates, CoordAtt's and EMA's
# sigmoid(h) * sigmoid(w)), with convolutions narrower than 16 (or 32) channels packed over their batch or not;
# and Q/DQ only on the inputs of weighted ops plus leading layers in float until
# cosine >= 0.9985 on calibration images.
UINT8 = {"activations": "uint8", "symmetric": False}
GATE_PRODUCTS = {**UINT8, "outer_gates_fp": True}  # ort-int8 from 2026-12-02 10:00
PACKED = {**GATE_PRODUCTS, "pack_narrow_convs": 16}  # ... from 12:00
CALIBRATION_KEYS = ("calibration", "num_images", "percentile", "seed", "cache_dir")
"""Set by the benchmark's options, not by a placement."""


def shipped_placement(target: str) -> dict[str, Any]:
    """The INT8 settings of a shipped target that differ from ``Int8Config``'s defaults, calibration aside: the
    placement the target ships, read from its config so the two cannot drift apart."""
    shipped, default = load_config(target).int8, Int8Config()
    return {
        f.name: getattr(shipped, f.name)
        for f in fields(Int8Config)
        if f.name not in CALIBRATION_KEYS and getattr(shipped, f.name) != getattr(default, f.name)
    }


PLACEMENTS: dict[str, dict[str, Any]] = {
    "uint8 asym., gates float": {**UINT8, "keep_gates_fp": True},
    "uint8 asym., gates int8": {**UINT8},  # ort-int8 until 2026-12-02
    "uint8 asym., gates int8, gate products float": GATE_PRODUCTS,
    "uint8 asym., gates int8, gate products float, narrow convs packed": PACKED,
    "uint8 asym., gates int8, gate products float, narrow convs packed, windowed max pools": {
        **PACKED,
        "windowed_max_pool": True,
    },
    (
        "uint8 asym., gates int8, gate products float, narrow convs packed, windowed max pools, "
        "channel means as conv (ort-int8)"
    ): shipped_placement("ort-int8"),
    "uint8 asym., gates int8, gate products float, narrow convs packed to 32": {
        **GATE_PRODUCTS,
        "pack_narrow_convs": 32,
    },
    "int8 sym., gates float (trt-int8)": shipped_placement("trt-int8"),
    "int8 sym., gates int8": {},
    "uint8 asym., weighted ops + fallback": {
        **UINT8,
        "keep_gates_fp": True,
        "op_types": ("Conv", "Gemm", "MatMul"),
        "fallback_cosine": 0.9985,
    },
}


def run_int8(
    models: list[str],
    methods: list[str],
    placements: list[str],
    calib_images: int,
    eval_images: int,
    merge: bool = False,
    stem: str = "int8_placement",
) -> None:
    """Each placement x calibration method per model: cosine, top-1 / box agreement, Q/DQ counts.

    ``merge`` keeps the stored rows of models not measured in this run; ``stem`` is the results' file stem.
    """
    rows = []
    with tempfile.TemporaryDirectory() as tmp, Progress(console=console) as progress:
        task = progress.add_task("int8", total=len(models) * len(methods) * len(placements))
        for name in models:
            model, preprocess, proto = _export(name, Path(tmp))
            calib = calibration_set(model.spec.input_name, preprocess, num_images=calib_images, seed=0)
            inputs = evaluation_images(preprocess, eval_images, EVAL_SEED)
            ref = reference_outputs(model, inputs)
            graphs = {"fp32": proto}
            for method in methods:
                for placement in placements:
                    progress.update(task, description=f"int8 {name} {method} {placement}")
                    options = {"calibration": method, "num_images": calib_images, **PLACEMENTS[placement]}
                    start = time.perf_counter()
                    quantized, report = quantize_int8(
                        proto, calib, Int8Config(**options), cache_dir=Path(tmp)
                    )
                    row = {"model": name, "method": method, "placement": placement}
                    row.update(score(model, ref, graph_outputs(model, quantized, inputs)))
                    row.update(qdq_nodes=report.qdq_nodes, excluded=len(report.excluded_nodes))
                    row["float_layers"] = len(report.fallback_nodes)
                    row["seconds"] = round(time.perf_counter() - start, 1)
                    rows.append(row)
                    graphs[f"{method}/{placement}"] = quantized
                    agree = row.get("top1_agreement", row.get("box_agreement"))
                    console.print(
                        f"{name} {method} {placement}: cosine {row['cosine']:.5f}, agreement {agree:.1%}"
                    )
                    progress.advance(task)
            progress.update(task, description=f"int8 {name}: latency")
            latency = _latency(graphs, model.spec.input_name, inputs[:1])
            for row in rows:
                if row["model"] == name:
                    row.update(
                        p50_ms=latency[f"{row['method']}/{row['placement']}"], fp32_p50_ms=latency["fp32"]
                    )
    meta = {
        "calibration": {"images": calib_images, "seed": 0, "source": "synthetic"},
        "evaluation": {"images": eval_images, "seed": EVAL_SEED},
        "runtime": "onnxruntime CPU (QDQ, per-channel int8 weights)",
        "placements": {
            k: {o: list(v) if isinstance(v, tuple) else v for o, v in p.items()}
            for k, p in PLACEMENTS.items()
        },
    }
    stored = RESULTS / f"{stem}.json"
    if merge and stored.is_file():
        rows = [r for r in json.loads(stored.read_text())["rows"] if r["model"] not in models] + rows
    write_json(stored, {"meta": meta, "rows": rows, "summary": _placement_summary(rows)})
    write_text(RESULTS / f"{stem}.md", _int8_markdown(rows, meta))


def _latency(
    graphs: dict[str, onnx.ModelProto], input_name: str, image: np.ndarray, runs: int = 20
) -> dict[str, float]:
    """p50 ms of each graph on ONNX Runtime CPU (physical-core threads), one image, interleaved runs.

    The sessions park their threads after each run (``ORT_BENCH_CONFIG``), as in ``attn-deploy bench``: an idle
    session's spinning pool would otherwise take the cores of the next graph timed."""
    runners = {
        k: OrtRunner(g.SerializeToString(), threads=physical_cores(), config=ORT_BENCH_CONFIG)
        for k, g in graphs.items()
    }
    calls = {k: (lambda r=r: r.infer({input_name: image}) and None) for k, r in runners.items()}
    samples = time_interleaved(calls, runs=runs, warmup_s=1.0)
    return {k: round(float(np.median(v.wall_ms)), 2) for k, v in samples.items()}


def _placement_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per placement: mean cosine over every model, mean top-1 agreement over the classifiers."""
    summary: dict[str, Any] = {}
    for placement in dict.fromkeys(r["placement"] for r in rows):
        mine = [r for r in rows if r["placement"] == placement]
        top1 = [r["top1_agreement"] for r in mine if "top1_agreement" in r]
        summary[placement] = {
            "mean_cosine": float(np.mean([r["cosine"] for r in mine])),
            "mean_top1_agreement": float(np.mean(top1)) if top1 else None,
        }
    return summary


def _int8_markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    def agreement(r: dict[str, Any]) -> str:
        if "top1_agreement" in r:
            return f"top-1 {r['top1_agreement']:.1%} (margin {r['median_top1_margin_sigma']:.2f} sigma)"
        return f"boxes {r['box_agreement']:.1%}, anchor boxes {r['anchor_box_agreement']:.1%}"

    table = markdown_table(
        ["model", "method", "placement", "cosine", "agreement", "layers in float", "Q/DQ nodes", "p50 ms (FP32)"],
        [
            [r["model"], r["method"], r["placement"], f"{r['cosine']:.5f}", agreement(r), r["float_layers"],
             r["qdq_nodes"], f"{r['p50_ms']} ({r['fp32_p50_ms']})"]
            for r in rows
        ],
    )  # fmt: skip
    summary = markdown_table(
        ["placement", "mean cosine (all models)", "mean top-1 agreement (classifiers)"],
        [
            [k, f"{v['mean_cosine']:.5f}", _percent(v["mean_top1_agreement"])]
            for k, v in _placement_summary(rows).items()
        ],
    )  # fmt: skip
    return (
        "# INT8 Q/DQ placement on the zoo\n\n"
        f"Calibration: {meta['calibration']['images']} synthetic images (seed 0); evaluation: "
        f"{meta['evaluation']['images']} other synthetic images (seed {EVAL_SEED}); {meta['runtime']}.\n\n"
        f"{summary}\n{table}\n{INT8_NOTES}"
    )


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


INT8_NOTES = """Reading the numbers:

- The zoo's weights are untrained (seeded, BatchNorm calibrated on synthetic images). The classifiers' logits
  are nearly flat: the median gap between the top-1 and top-2 logit is the "margin" column, in standard
  deviations of the logits, and their features barely depend on the image. INT8 noise then flips the top
  class on many images; trained classifiers keep their decisions (``int8_trained.md``). A few evaluation
  images drive late feature maps to 3-4x the largest value seen in calibration, which INT8 clips: those
  images dominate the cosine of resnet50-eca.
- YOLO class scores of untrained weights are ~1e-4 for all 80 classes, below one INT8 step of the sigmoid
  output, so decoded-box agreement is ~0 whatever the placement. "Anchor boxes" isolates the box regression:
  the share of the boxes at PyTorch's 100 best anchors per image that INT8 keeps within IoU 0.9.
- Integer format: uint8 asymmetric activations (ONNX Runtime's U8S8 x86 kernels) are both more accurate and
  faster than int8 symmetric (S8S8) on this CPU; ``ort-int8`` uses them. TensorRT only takes int8 symmetric,
  which ``trt-int8`` keeps (its latency here is ONNX Runtime's, not TensorRT's).
- Gates: the attention gates (sigmoid/softmax and the multiply they scale) kept in float
  (``int8.keep_gates_fp: true``) or quantized. On trained models both are equally accurate (int8_trained.md);
  quantized gates keep ONNX Runtime's data in integers across the multiply and run 2-23% faster, so
  ``ort-int8`` quantizes them. ``trt-int8`` keeps them in float until TensorRT timings decide.
- Gate products: CoordAtt's and EMA's ``sigmoid(h) * sigmoid(w)`` (shapes N,C,H,1 and N,C,1,W) as an INT8
  multiply runs as a broadcasting ``QLinearMul`` that requantizes row by row; ``ort-int8`` keeps those products
  and their two sigmoids in float (``int8.outer_gates_fp: true``) and every other gate in INT8.
- Narrow convolutions: EMA's per-group convolutions (8 channels on a batch of 32 groups on resnet50's first
  stage) run as block-diagonal convolutions over k images of their batch, 16 channels or more wide
  (``int8.pack_narrow_convs: 16``, ``precision/conv_packing.py``): the same integer products, in a
  ``QLinearConv`` that runs several times faster wide.
- Windowed max pools: ``GlobalMaxPool`` (CBAM's channel attention) as ``MaxPool`` with a window of the whole
  static map (``int8.windowed_max_pool: true``, ``precision/int8_forms.py``): the same max, run on uint8
  instead of behind a dequantize of the feature map.
- Channel means as conv: CBAM's ``mean(x, dim=1)`` as a 1x1 convolution of weights 1/C
  (``int8.channel_mean_conv: true``), quantized like the other convolutions instead of a float ``ReduceMean``
  behind a dequantize of the feature map.
- Every graph here starts from the export with the FP32-only channel-mean ``MatMul`` turned back into
  ``ReduceMean``, as the precision stage of ``attn-deploy export`` does (since 2026-12-02 13:00; earlier results
  quantized the ``MatMul``).
- "layers in float": leading Conv/Gemm layers kept unquantized by ``int8.fallback_cosine`` (0.9985, checked on
  the calibration images).
- p50 ms: ONNX Runtime CPU, one image, physical-core threads, 20 interleaved runs; FP32 in brackets. Since
  2026-12-02 the sessions park their threads between runs (as ``attn-deploy bench`` does).
"""


def main(argv: list[str] | None = None) -> None:
    """Command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="what", required=True)
    fp16 = sub.add_parser("fp16")
    fp16.add_argument("--models", nargs="+", default=None)
    fp16.add_argument("--images", type=int, default=2)
    fp16.add_argument("--merge", action="store_true", help="keep stored rows of models not measured now")
    int8 = sub.add_parser("int8")
    int8.add_argument("--models", nargs="+", default=list(INT8_MODELS))
    int8.add_argument("--methods", nargs="+", default=["percentile"])
    int8.add_argument("--placements", nargs="+", default=list(PLACEMENTS), choices=list(PLACEMENTS))
    int8.add_argument("--calib-images", type=int, default=32)
    int8.add_argument("--eval-images", type=int, default=200)
    int8.add_argument("--merge", action="store_true", help="keep stored rows of models not measured now")
    int8.add_argument(
        "--name", default="int8_placement", help="file stem of the results (default int8_placement)"
    )
    args = parser.parse_args(argv)
    if args.what == "fp16":
        run_fp16(args.models or list_models(), args.images, args.merge)
    else:
        try:
            stem = check_name(args.name, "--name", fix="use one file stem, e.g. int8_gate_products")
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        run_int8(
            args.models, args.methods, args.placements, args.calib_images, args.eval_images, args.merge, stem
        )
    console.print(json.dumps({"written": str(RESULTS)}))


if __name__ == "__main__":
    main()
