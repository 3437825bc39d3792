"""`attn-deploy serve`: serve exported artifacts over the KServe v2 / Triton HTTP protocol."""

from __future__ import annotations

import argparse
import asyncio

from rich.table import Table

from attn_deploy.commands.progress import console


def register(sub: argparse._SubParsersAction) -> None:
    """Add the sub-command's parser."""
    p = sub.add_parser(
        "serve",
        help="serve artifacts over the KServe v2 / Triton HTTP protocol (tritonclient works unchanged)",
        description="Serve engines/<model>/<target> directories with ONNX Runtime over the KServe v2 / "
        "Triton HTTP protocol, with dynamic micro-batching and Prometheus /metrics.",
    )
    p.add_argument(
        "artifacts", nargs="+", metavar="DIR", help="artifact directories (model.onnx + manifest.json)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    p.add_argument(
        "--max-delay-ms",
        type=float,
        default=2.0,
        help="how long a request waits for others to batch with (default: %(default)s)",
    )
    p.add_argument(
        "--max-batch",
        type=int,
        default=8,
        help="most items per execution for dynamic-batch models; 1 turns batching off (default: %(default)s)",
    )
    p.add_argument("--threads", type=int, default=2, help="inference worker threads (default: %(default)s)")
    p.add_argument(
        "--intra-op-threads",
        type=int,
        default=None,
        help="ONNX Runtime threads per run (default: cores / threads)",
    )
    p.add_argument(
        "--max-body-mb", type=float, default=64.0, help="request body limit (default: %(default)s)"
    )
    p.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="ONNX Runtime device (default: cpu)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the models, serve until Ctrl-C / SIGTERM, shut down gracefully."""
    from attn_deploy.serve.model_pool import ModelPool, ServeOptions
    from attn_deploy.serve.server import V2Server, serve_until_signalled

    options = ServeOptions(
        max_batch=args.max_batch,
        max_delay_ms=args.max_delay_ms,
        threads=args.threads,
        intra_op_threads=args.intra_op_threads,
        max_body_mb=args.max_body_mb,
        device=args.device,
    )
    server = V2Server(ModelPool(args.artifacts, options))

    def announce(port: int) -> None:
        console.print(f"listening on http://{args.host}:{port}", highlight=False)
        table = Table(title=f"serving on http://{args.host}:{port}/v2")
        for column in ("model", "version", "inputs", "outputs", "batching"):
            table.add_column(column)
        for model in server.pool.models.values():
            sig = model.signature
            table.add_row(
                model.name,
                model.version,
                "\n".join(f"{t.name} {t.datatype} {list(t.shape)}" for t in sig.inputs),
                "\n".join(f"{t.name} {t.datatype} {list(t.shape)}" for t in sig.outputs),
                f"up to {model.max_batch}, {options.max_delay_ms:g} ms" if model.batching else "off",
            )
        console.print(table)
        console.print("[dim]Ctrl-C stops the server after in-flight requests finish[/]")

    asyncio.run(serve_until_signalled(server, args.host, args.port, on_started=announce))
    console.print("[green]server stopped[/]")
    return 0
