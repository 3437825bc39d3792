"""`attn-deploy list`: every zoo model with params (M) and GFLOPs at its default input."""

from __future__ import annotations

import argparse

from rich.table import Table

from attn_deploy.display import console


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``list`` parser."""
    p = sub.add_parser("list", help="list zoo models with params and GFLOPs")
    p.add_argument("--arch", default=None, help="only models of this architecture (e.g. yolov8s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the zoo table. Models are built on the meta device: shapes and FLOPs, no weights, no compute."""
    # a command imports only what it runs: list builds the zoo's models, so torch loads here
    import torch

    from attn_deploy.models import create_model, list_models, model_spec
    from attn_deploy.models.profile import count_gflops, count_params

    arch = model_spec(args.arch).arch if args.arch is not None else None  # unknown: a one-line error
    names = [n for n in list_models() if arch is None or model_spec(n).arch == arch]
    table = Table(title="attn-deploy model zoo")
    for col in ("model", "task", "attention", "input", "params (M)", "GFLOPs"):
        table.add_column(col, justify="right" if col in ("params (M)", "GFLOPs") else "left")
    with console.status("counting params and FLOPs..."):
        for name in names:
            spec = model_spec(name)
            with torch.device("meta"):
                model = create_model(name, calibrate=False)
            gflops = count_gflops(model, (1, 3, *spec.input_size))
            table.add_row(
                name,
                spec.task,
                spec.attention,
                "x".join(map(str, spec.input_size)),
                f"{count_params(model) / 1e6:.2f}",
                f"{gflops:.2f}",
            )
    table.caption = "GFLOPs = 2 x multiply-adds of convolutions and matmuls (as Ultralytics reports them)"
    console.print(table)
    return 0
