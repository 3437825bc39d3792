"""The served models: one ONNX Runtime session per artifact, shared by the worker threads of one pool."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, RuntimeException

from attn_deploy.artifacts import Artifact
from attn_deploy.backends.ort import OrtRunner
from attn_deploy.errors import ConfigError, ModelNotFoundError, exception_summary
from attn_deploy.serve.batcher import BatchResult, MicroBatcher, batch_size_of
from attn_deploy.serve.labels import class_names
from attn_deploy.serve.metrics import ModelMetrics
from attn_deploy.serve.model_config import ONNX_PLATFORM, build_model_config
from attn_deploy.serve.protocol import ProtocolError
from attn_deploy.serve.signature import DYNAMIC, ModelSignature, element_count, read_signature
from attn_deploy.serve.sources import load_sources

MODEL_VERSION = "1"
DEVICES = {"cpu": ("CPUExecutionProvider",), "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider")}


@dataclass(frozen=True)
class ServeOptions:
    """How the server runs its models.

    Batching is on for a model whose batch dimension is dynamic when ``max_batch > 1``: requests that
    arrive within ``max_delay_ms`` are executed together, up to ``max_batch`` items. ``threads`` worker
    threads run inference; each ORT run uses ``intra_op_threads`` (default: CPU cores / threads).
    A connection must deliver a request's headers within ``header_timeout_s`` of opening (or of its previous
    response; this also closes idle keep-alive connections) and its body within ``body_timeout_s``.
    """

    max_batch: int = 8
    max_delay_ms: float = 2.0
    threads: int = 2
    intra_op_threads: int | None = None
    max_body_mb: float = 64.0
    device: str = "cpu"
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ConfigError(f"--max-batch must be >= 1, got {self.max_batch}")
        if not 0 <= self.max_delay_ms <= 60_000:  # comparisons with NaN are False: refused too
            raise ConfigError(f"--max-delay-ms must be 0-60000, got {self.max_delay_ms}")
        if self.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {self.threads}")
        if self.intra_op_threads is not None and self.intra_op_threads < 1:
            raise ConfigError(f"--intra-op-threads must be >= 1, got {self.intra_op_threads}")
        if not 0 < self.max_body_mb <= 1024 * 1024:
            raise ConfigError(f"--max-body-mb must be > 0 (and finite), got {self.max_body_mb}")
        if self.device not in DEVICES:
            raise ConfigError(f"--device must be one of {sorted(DEVICES)}, got {self.device!r}")
        for flag, value in (
            ("--header-timeout", self.header_timeout_s),
            ("--body-timeout", self.body_timeout_s),
        ):
            if not 0 < value < float("inf"):
                raise ConfigError(f"{flag} must be > 0 seconds (and finite), got {value}")

    @property
    def ort_threads(self) -> int:
        """Intra-op threads of each ORT run."""
        return self.intra_op_threads or max(1, (os.cpu_count() or 1) // self.threads)


JSON_BYTES_PER_NUMBER = 64
"""Most bytes one number takes in a JSON request: 24 for the longest float repr, its comma, and the indentation
of a pretty-printed nested list (json.dumps(indent=2) of a 4-D tensor: ~40)."""
HEADER_ALLOWANCE = 64 * 1024
"""Room for a request's names, parameters and whitespace besides its numbers."""


def _clip(text: str, limit: int = 100) -> str:
    """A client-supplied name as errors echo it: at most ``limit`` characters."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ServedModel:
    """One artifact behind the v2 protocol: its signature, session, batcher and counters."""

    def __init__(self, artifact: Artifact, options: ServeOptions, executor: ThreadPoolExecutor) -> None:
        self.artifact = artifact
        self.name = artifact.name
        self.version = MODEL_VERSION
        self.signature: ModelSignature = read_signature(artifact.onnx_path)
        self.runner = OrtRunner(
            artifact.onnx_path, providers=DEVICES[options.device], threads=options.ort_threads
        )
        self.runner.activate()
        self.batching = self.signature.dynamic_batch and options.max_batch > 1
        self.max_batch = options.max_batch if self.batching else 0
        self.max_delay_us = round(options.max_delay_ms * 1000)
        self.metrics = ModelMetrics(self.name, self.version)
        self.sizes = ImageSizeRule.from_manifest(artifact.manifest)
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = 4  # a shape the model cannot run is the client's error: no log
        self.batcher = MicroBatcher(
            self._run,
            executor,
            max_batch=options.max_batch if self.batching else 1,
            max_delay_s=options.max_delay_ms / 1000,
            on_execution=self.metrics.record_execution,
        )

    @property
    def max_request_bytes(self) -> int | None:
        """The largest body a valid request can have: every input at its largest (batch up to
        ``max_batch_size``) as JSON, :data:`JSON_BYTES_PER_NUMBER` each, plus a header allowance; ``None`` when an
        input has a dimension nothing bounds (dynamic H/W, or a dynamic batch without batching) or holds strings."""
        total = 0
        for spec in self.signature.inputs:
            dims = [self.max_batch if i == 0 and d == DYNAMIC else d for i, d in enumerate(spec.shape)]
            if any(d in (DYNAMIC, 0) for d in dims) or spec.datatype == "BYTES":
                return None
            total += element_count(dims)
        return total * JSON_BYTES_PER_NUMBER + HEADER_ALLOWANCE

    def check_inputs(self, inputs: dict[str, np.ndarray]) -> None:
        """Refuse (ProtocolError, HTTP 400) what the model cannot run: batches over ``max_batch_size``,
        image sizes off the model's stride or under its minimum (from the artifact's manifest)."""
        batch = batch_size_of(inputs)
        if self.max_batch and batch is not None and batch > self.max_batch:
            raise ProtocolError(
                f"batch size {batch} is over max_batch_size {self.max_batch} of model '{self.name}'; "
                "split the request"
            )
        for name, array in inputs.items():
            if array.ndim == 4:
                self.sizes.check(name, int(array.shape[2]), int(array.shape[3]))

    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self.runner.session is not None
        try:
            outputs = self.runner.session.run(
                None, {k: np.ascontiguousarray(v) for k, v in feed.items()}, self._run_options
            )
        except InvalidArgument as exc:
            raise ProtocolError(f"model '{self.name}' rejected the input: {exception_summary(exc)}") from None
        except (Fail, RuntimeException) as exc:
            if not self._untested_shape(feed):
                raise
            shapes = ", ".join(f"{n} {list(a.shape)}" for n, a in feed.items())
            raise ProtocolError(
                f"model '{self.name}' cannot run inputs of shape {shapes}: {exception_summary(exc)}; "
                f"it was exported and verified at {self.artifact.manifest.get('export_shape')}, "
                "send that size or one the model supports"
            ) from None
        return dict(zip(self.runner.output_names, outputs, strict=True))

    def _untested_shape(self, feed: dict[str, np.ndarray]) -> bool:
        """True when the first input's non-batch dims differ from the shape the artifact was exported and
        verified at, so an ORT failure is the request's shape's doing (False when the manifest cannot tell)."""
        export_shape = self.artifact.manifest.get("export_shape")
        first = feed.get(self.signature.inputs[0].name) if self.signature.inputs else None
        if not isinstance(export_shape, list) or first is None or first.ndim != len(export_shape):
            return False
        return list(first.shape[1:]) != export_shape[1:]

    async def infer(self, inputs: dict[str, np.ndarray]) -> BatchResult:
        """Run one validated request (batched with concurrent ones when batching is on)."""
        self.metrics.add_pending(1)
        try:
            return await self.batcher.infer(inputs)
        finally:
            self.metrics.add_pending(-1)

    def metadata(self) -> dict[str, Any]:
        """The v2 ``$metadata_model_response``; with class names, ``parameters.class_names`` (a JSON list as a
        string: parameter values are strings, numbers or booleans in the protocol)."""
        response: dict[str, Any] = {
            "name": self.name,
            "versions": [self.version],
            "platform": ONNX_PLATFORM,
            "inputs": [t.metadata() for t in self.signature.inputs],
            "outputs": [t.metadata() for t in self.signature.outputs],
        }
        names = class_names(self.artifact.manifest)
        if names:
            response["parameters"] = {"class_names": json.dumps(names)}
        return response

    def config(self) -> dict[str, Any]:
        """The Triton model configuration this server effectively runs."""
        return build_model_config(
            self.name, self.signature, max_batch_size=self.max_batch, max_queue_delay_us=self.max_delay_us
        )


class ModelPool:
    """All served models by name, and the worker threads they share."""

    def __init__(
        self,
        artifact_dirs: Sequence[str | os.PathLike[str]],
        options: ServeOptions,
        names: Sequence[str] | None = None,
    ) -> None:
        """Serve each artifact directory or plain ``.onnx`` file, as ``names`` (one per path) when given."""
        artifacts = load_sources(artifact_dirs, names)  # one-line errors before any session or thread starts
        self.options = options
        self.executor = ThreadPoolExecutor(options.threads, thread_name_prefix="attn-serve")
        self.models: dict[str, ServedModel] = {}
        try:
            for artifact in artifacts:
                self.models[artifact.name] = ServedModel(artifact, options, self.executor)
        except BaseException:
            self.executor.shutdown(wait=False)
            raise

    def get(self, name: str, version: str | None = None) -> ServedModel:
        """The model ``name`` (at ``version``, when given); ModelNotFoundError (HTTP 404) otherwise."""
        model = self.models.get(name)
        if model is None:
            raise ModelNotFoundError(
                f"unknown model '{_clip(name)}'; served models: {', '.join(sorted(self.models))}"
            )
        if version not in (None, "", model.version):
            raise ModelNotFoundError(
                f"model '{name}' has no version '{_clip(str(version))}'; served version: {model.version}"
            )
        return model

    def flush(self) -> None:
        """Start every queued request now."""
        for model in self.models.values():
            model.batcher.flush_all()

    def close(self) -> None:
        """Wait for running inferences, then stop the worker threads."""
        self.executor.shutdown(wait=True)


@dataclass(frozen=True)
class ImageSizeRule:
    """Height/width a model accepts, from its manifest's ``preprocess`` block (``stride``, ``min_size``).

    Manifests written before these keys existed give no rule (every size passes this check).
    """

    stride: int = 1
    min_size: int = 1

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> ImageSizeRule:
        """The rule of an artifact; values that are not positive integers are ignored."""
        block = manifest.get("preprocess")
        block = block if isinstance(block, dict) else {}

        def positive(key: str) -> int:
            value = block.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1

        return cls(stride=positive("stride"), min_size=positive("min_size"))

    def check(self, name: str, height: int, width: int) -> None:
        """ProtocolError naming the rule unless ``height`` x ``width`` follows it."""
        if height % self.stride or width % self.stride:

            def up(v: int) -> int:
                return max(self.stride, -(-v // self.stride) * self.stride, self.min_size)

            raise ProtocolError(
                f"input '{name}' is {height}x{width}: height and width must be multiples of {self.stride} "
                f"for this model; resize or letterbox to e.g. {up(height)}x{up(width)}"
            )
        if height < self.min_size or width < self.min_size:
            raise ProtocolError(
                f"input '{name}' is {height}x{width}: height and width must be at least {self.min_size} "
                "for this model"
            )
