"""aiohttp server speaking the KServe v2 / Open Inference Protocol over HTTP, as Triton does.

Endpoints (https://kserve.github.io/website/docs/concepts/architecture/data-plane/v2-protocol and
Triton's protocol extensions ``binary_tensor_data``, ``model_configuration``, ``statistics`` and the index of
``model_repository``)::

    GET  /v2                                  server metadata
    GET  /v2/health/live | /v2/health/ready   200, or 503 while shutting down
    GET  /v2/models/{m}[/versions/{v}]        model metadata
    GET  /v2/models/{m}[/versions/{v}]/ready  200, or 503 while shutting down
    GET  /v2/models/{m}[/versions/{v}]/config Triton model configuration (JSON)
    POST /v2/models/{m}[/versions/{v}]/infer  inference, JSON and binary tensors
    GET  /v2/models[/{m}[/versions/{v}]]/stats statistics extension (tritonclient get_inference_statistics)
    POST /v2/repository/index                 the served models, each READY (tritonclient
                                              get_model_repository_index; no load/unload)
    GET  /metrics                             Prometheus text, Triton metric names

Errors are ``{"error": "<one line>"}`` with 400 (bad request), 404 (unknown model/version/route),
405 (method not allowed), 408 (body not sent in time), 413 (body over the limit), 415 (multipart body),
500 (inference failed) or 503 (shutting down). A client that goes away is logged at debug level, in one
line, and is not an inference failure. Headers must arrive within ``header_timeout_s`` and bodies within
``body_timeout_s`` (ServeOptions), so slow clients cannot hold connections open. Inference runs in worker
threads; the event loop only parses, queues and answers. Shutdown stops accepting connections, then
lets in-flight requests finish (up to ``shutdown_timeout``) before the workers stop.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import StreamReader, web
from aiohttp.http_exceptions import HttpProcessingError

from attn_deploy import __version__
from attn_deploy.errors import AttnDeployError, ConfigError, InputError, ModelNotFoundError
from attn_deploy.serve.batcher import batch_size_of
from attn_deploy.serve.encoding import choose_encoding
from attn_deploy.serve.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from attn_deploy.serve.metrics import render_prometheus
from attn_deploy.serve.model_pool import ModelPool, ServedModel, ServeOptions
from attn_deploy.serve.protocol import (
    HEADER_LENGTH,
    PayloadTooLargeError,
    ProtocolError,
    RequestTimeoutError,
    UnsupportedMediaTypeError,
    decode_infer_request,
    encode_infer_response,
    error_body,
    parse_header_length,
)

log = logging.getLogger(__name__)

SERVER_NAME = "attn-deploy"
EXTENSIONS = ("binary_tensor_data", "model_configuration", "statistics")
READABLE_CODINGS = ("identity", "gzip", "deflate")  # request Content-Encoding aiohttp decodes itself

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _OneLineBadHttp(logging.Filter):
    """aiohttp answers a request it cannot parse (no Host, 8 KiB header line, bad Content-Length, TLS on
    the HTTP port, ...) with 400 itself, and logs a traceback at ERROR; after the server has answered a body
    that does not inflate (gzip that is not gzip) with 400, aiohttp drains the rest of it and logs the same
    error again as "Unhandled exception". Both are the client's fault, so one INFO line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError | web.RequestPayloadError):
            text = exc.message if isinstance(exc, HttpProcessingError) else exc
            record.msg = f"{record.msg}: {_clip(' '.join(str(text).split()))}"
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


_BAD_HTTP_FILTER = _OneLineBadHttp()


class ServerUnavailableError(AttnDeployError):
    """The server is shutting down and takes no new inference requests (HTTP 503)."""


def _status_of(exc: Exception) -> int:
    if isinstance(exc, ProtocolError):
        return exc.status
    if isinstance(exc, ModelNotFoundError):
        return 404
    if isinstance(exc, ServerUnavailableError):
        return 503
    if isinstance(exc, InputError):
        return 400
    return 500


def _error_response(status: int, message: str) -> web.Response:
    one_line = " ".join(message.split()) or "internal server error"
    response = web.Response(status=status, body=error_body(one_line), content_type="application/json")
    if status in (408, 413):
        response.force_close()  # the rest of the body is not read: this connection cannot carry another
    return response


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_response(obj: Any) -> web.Response:
    return web.Response(body=json.dumps(obj).encode(), content_type="application/json")


@web.middleware
async def _errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes ``{"error": ...}`` with its status; unexpected ones are logged."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _error_response(exc.status, _clip(f"{exc.reason}: {request.method} {request.path}"))
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except AttnDeployError as exc:
        return _error_response(_status_of(exc), str(exc))
    except asyncio.CancelledError:
        log.debug("client went away during %s %s", request.method, _clip(request.path))
        raise
    except ConnectionError as exc:  # the client went away; nobody reads this response
        log.debug(
            "client went away during %s %s (%s)", request.method, _clip(request.path), type(exc).__name__
        )
        return _error_response(499, "client closed the connection")
    except Exception as exc:
        log.exception("inference request failed")
        lines = str(exc).strip().splitlines()
        return _error_response(500, f"{type(exc).__name__}: {lines[0] if lines else ''}")


class V2Server:
    """The HTTP front of a ModelPool; ``start`` / ``stop`` inside a running event loop."""

    def __init__(self, pool: ModelPool, *, shutdown_timeout: float = 30.0) -> None:
        self.pool = pool
        self.shutdown_timeout = shutdown_timeout
        self.max_body_bytes = int(pool.options.max_body_mb * 1024 * 1024)
        self.draining = False
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self.app = self._build_app()

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[_errors_as_json], client_max_size=self.max_body_bytes)
        model = "/v2/models/{model}"
        versioned = "/v2/models/{model}/versions/{version}"
        app.router.add_get("/v2", self._server_metadata)
        app.router.add_get("/v2/health/live", self._live)
        app.router.add_get("/v2/health/ready", self._ready)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/v2/repository/index", self._repository_index)
        app.router.add_get("/v2/models/stats", self._statistics)  # before {model}: all models
        for prefix in (model, versioned):
            app.router.add_get(prefix + "/stats", self._statistics)
        for prefix in (model, versioned):
            app.router.add_get(prefix, self._model_metadata)
            app.router.add_get(prefix + "/ready", self._model_ready)
            app.router.add_get(prefix + "/config", self._model_config)
            app.router.add_post(prefix + "/infer", self._infer)
        return app

    def _model(self, request: web.Request) -> ServedModel:
        return self.pool.get(request.match_info["model"], request.match_info.get("version"))

    def _check_ready(self) -> None:
        if self.draining:
            raise ServerUnavailableError("server is shutting down; retry on another replica")

    async def _server_metadata(self, request: web.Request) -> web.Response:
        return _json_response({"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)})

    async def _live(self, request: web.Request) -> web.Response:
        return web.Response()

    async def _ready(self, request: web.Request) -> web.Response:
        self._check_ready()
        return web.Response()

    async def _model_metadata(self, request: web.Request) -> web.Response:
        return _json_response(self._model(request).metadata())

    async def _model_ready(self, request: web.Request) -> web.Response:
        self._model(request)
        self._check_ready()
        return web.Response()

    async def _model_config(self, request: web.Request) -> web.Response:
        return _json_response(self._model(request).config())

    async def _statistics(self, request: web.Request) -> web.Response:
        """``$stats_model_response``: one model (version), or every served model without a name."""
        models = [self._model(request)] if "model" in request.match_info else self.pool.models.values()
        return _json_response({"model_stats": [m.metrics.statistics() for m in models]})

    async def _repository_index(self, request: web.Request) -> web.Response:
        """``$repository_index_response``: every served model is loaded and READY (the body's ``ready``
        filter changes nothing). Triton's docs/protocol/extension_model_repository.md."""
        return _json_response(
            [
                {"name": m.name, "version": m.version, "state": "READY", "reason": ""}
                for m in self.pool.models.values()
            ]
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        text = render_prometheus(m.metrics for m in self.pool.models.values())
        return web.Response(body=text.encode(), headers={"Content-Type": METRICS_CONTENT_TYPE})

    def _body_limit(self, model: ServedModel) -> tuple[int, str]:
        """The most bytes a request for ``model`` may send, and what to say past it: the server's limit, or less
        where the model's inputs are bounded (a larger body cannot be a valid request, and parsing a large JSON
        body holds the event loop: 3 s for 60 MB)."""
        need = model.max_request_bytes
        if need is not None and need < self.max_body_bytes:
            return need, (
                f"request body is over the {need / 1e6:.1f} MB that model '{model.name}' can need (its inputs at "
                "most, as JSON); send only the model's inputs"
            )
        return self.max_body_bytes, (
            f"request body is over the {self.pool.options.max_body_mb:g} MB limit; "
            "send fewer items per request or raise --max-body-mb"
        )

    async def _read_body(self, request: web.Request, model: ServedModel) -> bytes:
        limit, too_large = self._body_limit(model)
        if request.content_length is not None and request.content_length > limit:
            raise PayloadTooLargeError(too_large)
        if request.content_type.startswith("multipart/"):
            raise UnsupportedMediaTypeError(
                f"Content-Type {request.content_type} is not supported; send the inference request as "
                "application/json (application/octet-stream with binary tensors)"
            )
        coding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if coding not in READABLE_CODINGS:
            raise UnsupportedMediaTypeError(
                f"Content-Encoding {_clip(coding, 40)!r} is not supported; send gzip, deflate or no encoding"
            )
        timeout = self.pool.options.body_timeout_s
        try:
            async with asyncio.timeout(timeout):
                body = await self._read_bounded(request.content, limit)
        except web.RequestPayloadError as exc:  # a body that does not decode or ends early
            message = " ".join(str(exc).split()).removeprefix("400, message: ")
            raise ProtocolError(f"cannot read the request body: {message}") from None
        except TimeoutError:
            raise RequestTimeoutError(
                f"request body not received within {timeout:g} s; send the whole body promptly"
            ) from None
        if body is None:
            raise PayloadTooLargeError(too_large)
        return body

    async def _read_bounded(self, content: StreamReader, limit: int) -> bytes | None:
        """The body, or None once it passes the limit. Read (and, for gzip/deflate, inflated) in aiohttp's
        small chunks, so an over-limit body costs at most the limit plus one chunk of memory, and that is
        freed on return (aiohttp's ``request.read()`` inflates in limit-sized chunks, and the exception it
        raises kept the buffer alive in a reference cycle until the next garbage collection)."""
        body = bytearray()
        while chunk := await content.readany():
            if len(body) + len(chunk) > limit:
                return None
            body += chunk
        return bytes(body)

    async def _infer(self, request: web.Request) -> web.Response:
        model = self._model(request)
        self._check_ready()
        started = time.perf_counter()
        try:
            body = await self._read_body(request, model)
            header_length = parse_header_length(request.headers.get(HEADER_LENGTH))
            decoded = decode_infer_request(body, header_length, model.signature)
            model.check_inputs(decoded.inputs)
            result = await model.infer(decoded.inputs)
            payload, response_header_length = encode_infer_response(
                model.name, model.version, result.outputs, decoded.outputs, decoded.id
            )
        except ConnectionError:
            raise  # the client went away: not a failed inference (the middleware logs one debug line)
        except Exception:
            model.metrics.record_failure((time.perf_counter() - started) * 1e6)
            raise
        model.metrics.record_success(
            batch_size_of(decoded.inputs) or 1, (time.perf_counter() - started) * 1e6, result.queue_us
        )
        if response_header_length is None:
            response = web.Response(body=payload, content_type="application/json")
        else:
            response = web.Response(
                body=payload,
                content_type="application/octet-stream",
                headers={HEADER_LENGTH: str(response_header_length)},
            )
        coding = choose_encoding(request.headers.get("Accept-Encoding"))
        if coding is not None:
            response.enable_compression(coding)  # tritonclient decodes gzip and deflate
        return response

    async def start(self, host: str = "127.0.0.1", port: int = 8000) -> int:
        """Listen on ``host:port`` (port 0: any free port); returns the bound port."""
        options = self.pool.options
        runner = web.AppRunner(
            self.app,
            access_log=None,
            shutdown_timeout=self.shutdown_timeout,
            # aiohttp closes a connection still waiting for (the rest of) a request's headers this long
            # after it opened or after its previous response: the header timeout, which also ends idle
            # keep-alive connections. Request line and each header field are capped at 8 KiB.
            keepalive_timeout=options.header_timeout_s,
            lingering_time=min(10.0, options.body_timeout_s),
            max_line_size=8190,
            max_field_size=8190,
        )
        await runner.setup()
        logging.getLogger("aiohttp.server").addFilter(_BAD_HTTP_FILTER)  # once: filters are a set
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            port_taken = exc.errno in (errno.EADDRINUSE, errno.EACCES)  # in use, or < 1024 without root
            fix = (
                "pick another --port" if port_taken else "give --host an address of this machine (127.0.0.1)"
            )
            raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); {fix}") from None
        self._runner = runner
        self.port = runner.addresses[0][1]
        return self.port

    async def stop(self) -> None:
        """Graceful shutdown: refuse new work, finish in-flight requests, then stop the workers."""
        self.draining = True
        self.pool.flush()
        if self._runner is not None:
            await self._runner.cleanup()  # closes the listener, then waits for running handlers
            self._runner = None
        await asyncio.get_running_loop().run_in_executor(None, self.pool.close)


async def serve_until_signalled(
    server: V2Server, host: str, port: int, on_started: Callable[[int], None] | None = None
) -> None:
    """Run ``server`` until SIGINT or SIGTERM, then shut it down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bound = await server.start(host, port)
    if on_started is not None:
        on_started(bound)
    try:
        await stop.wait()
    finally:
        await server.stop()


class BackgroundServer:
    """A V2Server on its own event loop in a background thread (tests, benchmarks, notebooks).

    ``with BackgroundServer(["engines/m/ort-fp32", "my.onnx"]) as srv: ... srv.url`` -- stops gracefully on
    exit; ``names`` (one per path) serves them under other names.
    """

    def __init__(
        self,
        artifact_dirs: Sequence[str | os.PathLike[str]],
        options: ServeOptions | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        shutdown_timeout: float = 30.0,
        names: Sequence[str] | None = None,
    ) -> None:
        self.host = host
        self.server = V2Server(
            ModelPool(artifact_dirs, options or ServeOptions(), names), shutdown_timeout=shutdown_timeout
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="attn-serve-loop", daemon=True)
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self.server.start(host, port), self._loop)
        try:
            self.port: int = future.result(timeout=30)
        except BaseException:
            self._close_loop()
            self.server.pool.close()
            raise

    @property
    def url(self) -> str:
        """``host:port`` as tritonclient's ``InferenceServerClient(url=...)`` takes it."""
        return f"{self.host}:{self.port}"

    def stop(self, timeout: float = 60.0) -> None:
        """Shut down gracefully (in-flight requests finish) and end the loop thread; idempotent."""
        if self._loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(timeout=timeout)
        self._close_loop()

    def _close_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
