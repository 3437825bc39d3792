"""Export every zoo model at its default size with dynamic batch and H/W; record time and parity.

    python -m benchmarks.zoo_export [--models yolov8s-eca,resnet50-se] [--out benchmarks/results/zoo_export]

Writes ``zoo_export.json`` and ``zoo_export.md``. For detectors the box rows (pixels) and the class-score rows
are reported apart: FP32 error scales with the value's magnitude, so boxes in pixels carry errors of ~1e-2 px
(as PyTorch FP32 itself does against float64) while scores agree to ~1e-5.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch
from rich.progress import track

from attn_deploy import fsutil
from attn_deploy.backends.ort import make_session
from attn_deploy.display import console
from attn_deploy.markdown import markdown_table
from attn_deploy.models import create_model, list_models, model_spec
from attn_deploy.workflow.zoo import export_zoo_model


def score_and_box_errors(name: str, onnx_path: Path, shape: tuple[int, ...]) -> dict[str, float]:
    """Max abs error of ORT vs PyTorch at an unseen ``shape``, split into box rows and score rows (detectors)."""
    spec = model_spec(name)
    model = create_model(name)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(7))
    x = (x - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        ref = model(x).numpy()
    got = make_session(onnx_path).run(None, {spec.input_name: x.numpy()})[0]
    diff = np.abs(ref - got)
    if spec.task == "detect":
        return {"max_abs_boxes_px": float(diff[:, :4].max()), "max_abs_scores": float(diff[:, 4:].max())}
    return {"max_abs_logits": float(diff.max())}


def main() -> None:
    """Run the zoo export and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=None, help="comma-separated names (default: every zoo model)")
    parser.add_argument("--out", default="benchmarks/results/zoo_export")
    args = parser.parse_args()
    names = args.models.split(",") if args.models else list_models()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in track(names, description="exporting the zoo", console=console):
            artifact, result = export_zoo_model(name, dynamic=True, out_root=tmp)
            unseen = result.shapes[-1]  # not the traced shape; the last one the verifier took
            rows.append(
                {
                    "model": name,
                    "export_s": round(result.seconds, 1),
                    "stages_s": result.stage_seconds,
                    "passed": result.parity.passed,
                    "max_abs": result.parity.max_abs,
                    "max_rel": result.parity.max_rel,
                    "cosine": result.parity.cosine,
                    "verified_shapes": [list(s) for s in result.shapes],
                    "rewrites": result.rewrites,
                    "ops": sum(result.ops_after.values()),
                    "unseen_shape": list(unseen),
                    **score_and_box_errors(name, artifact.onnx_path, unseen),
                }
            )
    machine = {"cpu": platform.processor() or platform.machine(), "cores": torch.get_num_threads()}
    report = {"date": dt.date.today().isoformat(), "machine": machine, "results": rows}
    out = Path(args.out)
    fsutil.write_json(out.with_suffix(".json"), report)
    table = markdown_table(
        [
            "model",
            "export s",
            "passed",
            "max abs",
            "max rel",
            "cosine",
            "scores/logits max abs",
            "boxes max abs px",
        ],
        [
            [
                r["model"],
                r["export_s"],
                r["passed"],
                r["max_abs"],
                r["max_rel"],
                r["cosine"],
                r.get("max_abs_scores", r.get("max_abs_logits")),
                r.get("max_abs_boxes_px"),
            ]
            for r in rows
        ],
    )
    fsutil.write_text(
        out.with_suffix(".md"), f"# Zoo export, dynamic batch and H/W ({report['date']})\n\n{table}"
    )
    console.print(table)


if __name__ == "__main__":
    main()
