"""`attn-deploy serve`: serve exported artifacts over the KServe v2 / Triton HTTP protocol."""

from __future__ import annotations

import argparse
import ipaddress
import re
import sys
from collections.abc import Callable
from typing import NoReturn

from rich.table import Table

from attn_deploy.display import console

_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?$")


def port_number(text: str) -> int:
    """``--port``: an integer 0-65535 (0: any free port); ArgumentTypeError otherwise."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be an integer 0-65535 (0: any free port), got {text!r}"
        ) from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be an integer 0-65535 (0: any free port), got {port}")
    return port


def host_address(text: str) -> str:
    """``--host``: an IPv4/IPv6 address or a host name (no scheme, no port); ArgumentTypeError otherwise."""
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        pass
    if _HOSTNAME.match(text):
        return text
    hint = " (no scheme)" if "://" in text else " (give the port with --port)" if ":" in text else ""
    raise argparse.ArgumentTypeError(
        f"must be an IP address or host name such as 127.0.0.1, 0.0.0.0 or ::1, got {text!r}{hint}"
    )


def positive_seconds(text: str) -> float:
    """A timeout in seconds, > 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


def _one_line_error(parser: argparse.ArgumentParser) -> Callable[[str], NoReturn]:
    def error(message: str) -> NoReturn:
        sys.stderr.write(f"error: {message} (see {parser.prog} --help)\n")
        sys.exit(2)

    return error


def register(sub: argparse._SubParsersAction) -> None:
    """Add the sub-command's parser."""
    p = sub.add_parser(
        "serve",
        help="serve artifacts over the KServe v2 / Triton HTTP protocol (tritonclient works unchanged)",
        description="Serve engines/<model>/<target> directories with ONNX Runtime over the KServe v2 / "
        "Triton HTTP protocol, with dynamic micro-batching and Prometheus /metrics.",
    )
    p.add_argument(
        "artifacts",
        nargs="+",
        metavar="PATH",
        help="artifact directories (model.onnx + manifest.json) or plain .onnx files",
    )
    p.add_argument(
        "--name",
        action="append",
        default=None,
        dest="names",
        help="serve the PATHs under these names, one --name per PATH in order (two targets of one model: "
        "--name yolov8s-eca-fp32 --name yolov8s-eca-int8); default: the manifest's model or the file's stem",
    )
    p.error = _one_line_error(p)  # type: ignore[method-assign]  # usage errors: one line, exit code 2
    p.add_argument(
        "--host", type=host_address, default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    p.add_argument(
        "--port", type=port_number, default=8000, help="port, 0 for any free one (default: %(default)s)"
    )
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
    p.add_argument(
        "--header-timeout",
        type=positive_seconds,
        default=10.0,
        help="seconds a connection may take to send a request's headers; also ends idle keep-alive "
        "connections (default: %(default)s)",
    )
    p.add_argument(
        "--body-timeout",
        type=positive_seconds,
        default=30.0,
        help="seconds a request may take to send its body (default: %(default)s)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the models, serve until Ctrl-C / SIGTERM, shut down gracefully."""
    # a command imports only what it runs: ONNX Runtime and aiohttp load when serve does (never torch)
    import asyncio  # 30 ms: not for --help or list

    from attn_deploy.serve.model_pool import ModelPool, ServeOptions
    from attn_deploy.serve.server import V2Server, serve_until_signalled

    options = ServeOptions(
        max_batch=args.max_batch,
        max_delay_ms=args.max_delay_ms,
        threads=args.threads,
        intra_op_threads=args.intra_op_threads,
        max_body_mb=args.max_body_mb,
        device=args.device,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
    )
    server = V2Server(ModelPool(args.artifacts, options, args.names))

    def announce(port: int) -> None:
        host = f"[{args.host}]" if ":" in args.host else args.host  # an IPv6 address in a URL
        console.print(f"listening on http://{host}:{port}", highlight=False)
        table = Table(title=f"serving on http://{host}:{port}/v2")
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
