"""Train the zoo's yolov8n-{none,se,cbam,eca,ema} on the synthetic detection set: the trained detectors of issue 11.

    python -m benchmarks.train_detectors [--attentions none ema ...] [--minutes 14] [--imgsz 128]

Makes the dataset first if it is missing (``attn-deploy make-data --task detect``, seed 0, under
``build/detect-data-128``), then trains each model from its zoo initialisation with
:func:`attn_deploy.train.train_detector` (YOLOv8 loss, AdamW + warm-up, EMA) for ``--epochs`` epochs or
``--minutes`` minutes, whichever ends first, and scores the EMA weights in PyTorch FP32 on the val split
(``yolo val`` postprocess, COCO mAP). Weights go to ``build/trained/yolov8n-<attention>.pt`` (git-ignored;
this script regenerates them); the numbers to ``benchmarks/results/train_detectors.{json,md}``, one entry per
model, merged with earlier runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from attn_deploy import create_model
from attn_deploy.data.detection_scenes import write_detection_dataset
from attn_deploy.data.yolo_dataset import load_data_yaml, load_split
from attn_deploy.fsutil import atomic_path, write_json, write_text
from attn_deploy.markdown import markdown_table
from attn_deploy.train.detector import train_detector
from attn_deploy.train.loop import TrainSettings
from attn_deploy.validate.detection_eval import outputs_of, score_outputs

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
DATA = ROOT / "build" / "detect-data-128"
TRAINED = ROOT / "build" / "trained"
ATTENTIONS = ("none", "ema", "eca", "se", "cbam")


def ensure_dataset(images: int, imgsz: int, folder: Path = DATA) -> Path:
    """The dataset's data.yaml, written first when missing."""
    yaml_path = folder / "data.yaml"
    if not yaml_path.is_file():
        write_detection_dataset(folder, images, imgsz, seed=0)
    return yaml_path


def weights_path(attention: str) -> Path:
    """Where the trained weights of ``yolov8n-<attention>`` live."""
    return TRAINED / f"yolov8n-{attention}.pt"


def evaluate_torch(model: torch.nn.Module, data_yaml: Path, imgsz: int, batch: int = 16) -> dict[str, Any]:
    """PyTorch FP32 mAP of ``model`` on the val split."""
    dataset = load_data_yaml(data_yaml)
    images, truths = load_split(dataset, "val", (imgsz, imgsz))
    model.eval()
    with torch.inference_mode():
        outputs = outputs_of(lambda x: model(torch.from_numpy(x)).numpy(), images, batch)
    return score_outputs(outputs, truths, dataset.num_classes).to_dict(dataset.names)


def train_one(attention: str, data_yaml: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Train, save and score ``yolov8n-<attention>``; its results entry."""
    torch.manual_seed(0)
    nc = load_data_yaml(data_yaml).num_classes
    model = create_model(f"yolov8n-{attention}", num_classes=nc, calibrate=False)
    settings = TrainSettings(lr=args.lr)
    last = [time.perf_counter()]

    def on_step(done: int, total: int, losses: list[float]) -> None:
        if done % 20 == 0 or done == total:
            now = time.perf_counter()
            print(f"  {attention} step {done}/{total} loss {losses} ({now - last[0]:.0f} s)", flush=True)
            last[0] = now

    result = train_detector(
        model,
        data_yaml,
        args.epochs,
        args.imgsz,
        args.batch,
        settings,
        on_step=on_step,
        time_limit=args.minutes * 60,
    )
    TRAINED.mkdir(parents=True, exist_ok=True)
    with atomic_path(weights_path(attention)) as tmp:
        torch.save(result.model.state_dict(), tmp)
    start = time.perf_counter()
    metrics = evaluate_torch(result.model, data_yaml, args.imgsz)
    tail = result.losses[-20:]
    return {
        "model": f"yolov8n-{attention}",
        "steps": len(result.losses),
        "images_seen": len(result.losses) * args.batch,
        "train_seconds": result.seconds,
        "eval_seconds": round(time.perf_counter() - start, 1),
        "final_loss_box_cls_dfl": [round(sum(v) / len(tail), 4) for v in zip(*tail, strict=True)],
        "imgsz": args.imgsz,
        "batch": args.batch,
        "lr": args.lr,
        "pytorch_fp32_val": metrics,
    }


def write_results(entries: dict[str, Any], meta: dict[str, Any]) -> None:
    """``train_detectors.json`` and ``.md``."""
    write_json(RESULTS / "train_detectors.json", {"meta": meta, "models": entries})
    rows = [
        [
            e["model"],
            e["steps"],
            e["images_seen"],
            f"{e['train_seconds'] / 60:.1f}",
            f"{e['pytorch_fp32_val']['map50']:.3f}",
            f"{e['pytorch_fp32_val']['map50_95']:.3f}",
            _fmt(e["pytorch_fp32_val"]["ap_small"]),
        ]
        for e in entries.values()
    ]
    header = ["model", "steps", "images seen", "train min", "mAP50", "mAP50-95", "AP small"]
    text = (
        "# Trained yolov8n detectors on the synthetic set (PyTorch FP32, val split)\n\n"
        f"{meta['note']}\n\n" + markdown_table(header, rows) + "\n"
    )
    write_text(RESULTS / "train_detectors.md", text)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attentions", nargs="+", default=list(ATTENTIONS), choices=ATTENTIONS)
    parser.add_argument("--images", type=int, default=3000, help="dataset size (train + val; 20 %% val)")
    parser.add_argument("--imgsz", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--epochs", type=float, default=30)
    parser.add_argument("--minutes", type=float, default=14.0, help="time limit of each training")
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--data", type=Path, default=DATA, help="dataset folder (made when missing)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a busy machine 2 OpenMP threads spin and run ~10x slower)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data_yaml = ensure_dataset(args.images, args.imgsz, args.data)
    meta = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "dataset": f"attn-deploy make-data --task detect --images {args.images} --imgsz {args.imgsz} --seed 0",
        "note": (
            f"Trained with {args.threads} torch thread(s) each, two trainings at a time on an otherwise idle "
            "2-core machine (so each training had one core): the time limit, not the epoch count, ended each run."
        ),
    }
    for attention in args.attentions:
        print(f"training yolov8n-{attention}", flush=True)
        entry = train_one(attention, data_yaml, args)
        path = RESULTS / "train_detectors.json"  # read again: other runs may have added models meanwhile
        entries = json.loads(path.read_text())["models"] if path.is_file() else {}
        entries[entry["model"]] = entry
        write_results(dict(sorted(entries.items())), meta)
        print(json.dumps(entry["pytorch_fp32_val"]), flush=True)


if __name__ == "__main__":
    main()
