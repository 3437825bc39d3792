"""`attn-deploy triton-repo`: write a Triton model repository from artifacts."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from attn_deploy.config import MAX_BATCH
from attn_deploy.display import console

MAX_DELAY_MS = 10_000.0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the sub-command's parser."""
    p = sub.add_parser(
        "triton-repo",
        help="write a Triton model repository (config.pbtxt + 1/model.onnx or model.plan)",
        description="Write <out>/<model>/config.pbtxt and <out>/<model>/1/model.onnx (model.plan for "
        "TensorRT artifacts) for each artifact directory.",
    )
    p.add_argument(
        "artifacts",
        nargs="+",
        metavar="PATH",
        help="artifact directories (engines/<model>/<target>) or plain .onnx files",
    )
    p.add_argument(
        "--name",
        action="append",
        default=None,
        dest="names",
        help="Triton model names, one --name per PATH in order (default: the manifest's model or the file's stem)",
    )
    p.add_argument("--out", default="model_repository", help="repository directory (default: %(default)s)")
    p.add_argument(
        "--max-batch",
        type=int,
        default=None,
        help="max_batch_size for dynamic-batch models; 0 turns batching off (default: 8, clamped to a TensorRT "
        "engine's profile; an explicit value above the profile is refused)",
    )
    p.add_argument(
        "--max-delay-ms",
        type=float,
        default=2.0,
        help="dynamic_batching max_queue_delay, in milliseconds (default: %(default)s)",
    )
    p.add_argument(
        "--trt-accelerator",
        choices=("fp32", "fp16", "int8"),
        default=None,
        help="ONNX models: run through ONNX Runtime's TensorRT accelerator at this precision",
    )
    p.add_argument(
        "--kserve",
        action="store_true",
        help="also write <out>-inferenceservice.yaml: a KServe InferenceService (Triton runtime) serving the "
        "repository from --storage-uri",
    )
    p.add_argument(
        "--storage-uri",
        default=None,
        help="with --kserve: where the repository folder will be uploaded (gs://, s3://, pvc://...; "
        "default pvc://attn-deploy-models/<out name>)",
    )
    p.add_argument(
        "--kserve-name", default=None, help="with --kserve: the InferenceService name (default: <out name>)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the repository and print what went where."""
    # a command imports only what it runs: ONNX and the artifact reader load when triton-repo does
    from attn_deploy.errors import ConfigError
    from attn_deploy.fsutil import check_writable_dir
    from attn_deploy.serve.kserve import inference_service, service_name, write_inference_service
    from attn_deploy.serve.triton_repo import write_triton_repository

    if args.max_batch is not None and not 0 <= args.max_batch <= MAX_BATCH:
        raise ConfigError(f"--max-batch must be 0..{MAX_BATCH} (0 turns batching off), got {args.max_batch}")
    if not 0 <= args.max_delay_ms <= MAX_DELAY_MS:  # also refuses nan
        raise ConfigError(f"--max-delay-ms must be 0..{MAX_DELAY_MS:g}, got {args.max_delay_ms}")
    check_writable_dir(args.out)
    if (args.storage_uri or args.kserve_name) and not args.kserve:
        raise ConfigError("--storage-uri and --kserve-name go with --kserve")
    out = Path(args.out).resolve()
    service = args.kserve_name if args.kserve_name is not None else service_name(out.name)
    storage_uri = args.storage_uri or f"pvc://attn-deploy-models/{service}"
    if args.kserve:  # a bad name, URI or place fails before anything is written
        if out == Path.cwd().resolve() or out in Path.cwd().resolve().parents:
            raise ConfigError(
                "--kserve writes <out>-inferenceservice.yaml next to --out: give --out a folder name"
            )
        inference_service(service, storage_uri, gpu=False)

    written = write_triton_repository(
        args.artifacts,
        args.out,
        max_batch=args.max_batch,
        max_delay_ms=args.max_delay_ms,
        trt_precision=args.trt_accelerator,
        names=args.names,
    )
    table = Table(title=f"Triton model repository: {args.out}")
    for column in ("model", "platform", "max_batch_size", "inputs", "accelerator", "file"):
        table.add_column(column)
    for model in written:
        config = model.config
        accelerators = config.get("optimization", {}).get("execution_accelerators", {})
        precision = [
            a["parameters"]["precision_mode"] for a in accelerators.get("gpu_execution_accelerator", [])
        ]
        table.add_row(
            model.name,
            model.platform,
            str(config["max_batch_size"]),
            "\n".join(f"{t['name']} {t['data_type']} {t['dims']}" for t in config["input"]),
            f"tensorrt {precision[0]}" if precision else "-",
            str(model.model_file),
        )
    console.print(table)
    for model in written:
        for note in model.notes:
            console.print(f"[yellow]{model.name}: {note}")
    if args.kserve:
        path = out.parent / f"{out.name}-inferenceservice.yaml"
        write_inference_service(path, service, storage_uri, [m.config for m in written])
        console.print(
            f"KServe InferenceService '{service}' (runtime kserve-tritonserver): {path}\n"
            f"upload {args.out} to {storage_uri}, then: kubectl apply -f {path}"
        )
    return 0
