"""ONNX Runtime runner (CPU everywhere; CUDA / TensorRT execution providers with onnxruntime-gpu)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from attn_deploy.backends.base import RunnerBase
from attn_deploy.errors import InputError, exception_summary


def make_session(
    model: str | os.PathLike[str] | bytes,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    threads: int | None = None,
    config: Mapping[str, str] | None = None,
) -> ort.InferenceSession:
    """An InferenceSession with full graph optimisation and fixed thread counts; a clear error for bad files.

    ``config``: extra session config entries (``SessionOptions.add_session_config_entry``).
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    source = model if isinstance(model, bytes) else str(model)
    if not isinstance(model, bytes) and not Path(model).is_file():
        raise InputError(f"ONNX file '{model}' not found; pass the path of an exported model.onnx")
    available = ort.get_available_providers()
    missing = [p for p in providers if p not in available]
    if missing:
        raise InputError(
            f"ONNX Runtime provider(s) {missing} not available (have {available}); "
            "install onnxruntime-gpu (pip install 'attn-deploy[gpu]') on a GPU machine"
        )
    try:
        session = ort.InferenceSession(source, sess_options=options, providers=list(providers))
    except Exception as exc:  # ORT raises its own exception types for corrupt/unsupported graphs
        raise InputError(f"ONNX Runtime cannot load the model: {exception_summary(exc)}") from None
    check_providers(providers, session.get_providers())
    return session


def check_providers(requested: Sequence[str], active: Sequence[str]) -> None:
    """An ``InputError`` unless the session runs on the first provider asked for.

    ONNX Runtime falls back from the TensorRT provider to CUDA and from CUDA to CPU when one fails to
    initialise (a missing libcudnn / libnvinfer, no GPU), logging an error but not raising; only
    ``InferenceSession.get_providers()`` tells what the session actually uses
    (onnxruntime/python/onnxruntime_inference_collection.py). Later providers in ``requested`` are
    fallbacks for the ops the first cannot run, as ONNX Runtime assigns them.
    """
    if requested and (not active or active[0] != requested[0]):
        raise InputError(
            f"ONNX Runtime did not start {requested[0]} (the session runs on {list(active)}): it fell back, see "
            "the ONNX Runtime log; check the CUDA / cuDNN / TensorRT libraries onnxruntime-gpu needs"
        )


class OrtRunner(RunnerBase):
    """Run an ONNX model with ONNX Runtime."""

    def __init__(
        self,
        model: str | os.PathLike[str] | bytes,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        threads: int | None = None,
        config: Mapping[str, str] | None = None,
    ) -> None:
        self.model = model
        self.providers = tuple(providers)
        self.threads = threads
        self.config = dict(config or {})
        self.session: ort.InferenceSession | None = None
        self.name = "ort-" + self.providers[0].replace("ExecutionProvider", "").lower()
        self.active_providers: list[str] = []  # what the session runs on, once activated

    def activate(self) -> None:
        """Create the session (once)."""
        if self.session is None:
            self.session = make_session(self.model, self.providers, self.threads, self.config)
            self.active_providers = list(self.session.get_providers())

    def deactivate(self) -> None:
        """Drop the session."""
        self.session = None

    def _live(self) -> ort.InferenceSession:
        self.activate()
        assert self.session is not None
        return self.session

    @property
    def input_names(self) -> list[str]:
        """Graph input names."""
        return [i.name for i in self._live().get_inputs()]

    @property
    def output_names(self) -> list[str]:
        """Graph output names."""
        return [o.name for o in self._live().get_outputs()]

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch."""
        session = self._live()
        outputs = session.run(None, {k: np.ascontiguousarray(v) for k, v in feed.items()})
        return dict(zip(self.output_names, outputs, strict=True))
