"""`attn-deploy make-data --task detect --out DIR --images N`: write a synthetic dataset to train and score on."""

from __future__ import annotations

import argparse

from attn_deploy.display import console

TASKS = ("detect",)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``make-data`` parser."""
    p = sub.add_parser(
        "make-data",
        help="write a synthetic detection dataset (Ultralytics layout, data.yaml), deterministic by seed",
    )
    p.add_argument("--task", choices=TASKS, default="detect", help="what the dataset is for (default detect)")
    p.add_argument("--out", required=True, help="new folder to write (must not exist, or be empty)")
    p.add_argument("--images", type=int, default=1000, help="images in all (20%% go to val; default 1000)")
    p.add_argument("--imgsz", type=int, default=256, help="image side in pixels (default 256)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0): same seed, same files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the dataset; print where its data.yaml is."""
    from attn_deploy.data.detection_scenes import write_detection_dataset
    from attn_deploy.errors import InputError

    if args.seed < 0:
        raise InputError(f"--seed must be >= 0, got {args.seed}")
    with console.status(f"writing {args.images} images to {args.out} ..."):
        yaml_path = write_detection_dataset(args.out, args.images, args.imgsz, args.seed)
    console.print(f"[bold green]done[/] - {yaml_path}")
    return 0
