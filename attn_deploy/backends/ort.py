"""ONNX Runtime runner (CPU everywhere; CUDA / TensorRT execution providers with onnxruntime-gpu)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from attn_deploy.backends.base import RunnerBase
from attn_deploy.backends.ort_nchwc import Shape, fuse_blocked_gates, has_channel_gates, shapes_of
from attn_deploy.errors import InputError, exception_summary
from attn_deploy.fsutil import scratch_dir

log = logging.getLogger(__name__)


def make_session(
    model: str | os.PathLike[str] | bytes,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    threads: int | None = None,
    config: Mapping[str, str] | None = None,
    blocked_gates: bool = True,
) -> ort.InferenceSession:
    """An InferenceSession with full graph optimisation and fixed thread counts; a clear error for bad files.

    ``config``: extra session config entries (``SessionOptions.add_session_config_entry``).
    ``blocked_gates``: on the CPU provider, run the model's channel gates in ORT's blocked layout
    (:mod:`attn_deploy.backends.ort_nchwc`), checked against the plain session on one input.
    """
    if not isinstance(model, bytes) and not Path(model).is_file():
        raise InputError(f"ONNX file '{model}' not found; pass the path of an exported model.onnx")
    available = ort.get_available_providers()
    missing = [p for p in providers if p not in available]
    if missing:
        raise InputError(
            f"ONNX Runtime provider(s) {missing} not available (have {available}); "
            "install onnxruntime-gpu (pip install 'attn-deploy[gpu]') on a GPU machine"
        )
    options = session_options(threads, config)
    source = model if isinstance(model, bytes) else str(model)
    shapes = (
        _gate_shapes(model) if blocked_gates and list(providers[:1]) == ["CPUExecutionProvider"] else None
    )
    if shapes is None:
        return _session(source, options, providers)
    with scratch_dir("attn-deploy-ort-") as tmp:
        options.optimized_model_filepath = str(tmp / "optimized.onnx")
        try:
            session = _session(source, options, providers)
        except InputError:  # e.g. ORT cannot save its optimised graph (over 2 GB): the plain session says why
            return _session(source, session_options(threads, config), providers)
        return with_blocked_gates(session, Path(options.optimized_model_filepath), shapes, threads, config)


def session_options(
    threads: int | None = None, config: Mapping[str, str] | None = None
) -> ort.SessionOptions:
    """All graph optimisations, ORT's warnings off, ``threads`` intra-op threads, ``config`` entries."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # also ORT's "hardware specific" warning when it saves an NCHWc graph
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    return options


def _session(
    source: str | bytes, options: ort.SessionOptions, providers: Sequence[str]
) -> ort.InferenceSession:
    try:
        session = ort.InferenceSession(source, sess_options=options, providers=list(providers))
    except Exception as exc:  # ORT raises its own exception types for corrupt/unsupported graphs
        raise InputError(f"ONNX Runtime cannot load the model: {exception_summary(exc)}") from None
    check_providers(providers, session.get_providers())
    return session


def _gate_shapes(model: str | os.PathLike[str] | bytes) -> dict[str, Shape] | None:
    """The tensor shapes of ``model`` when it has a channel gate the blocked-gate rewrite may take, else None
    (no gate, or a file ONNX cannot read: ORT then says what is wrong with it)."""
    try:
        proto = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(str(model))
        shapes = shapes_of(proto)
    except Exception:  # onnx raises many types for unreadable files; the session creation reports the file
        return None
    return shapes if has_channel_gates(proto, shapes) else None


def with_blocked_gates(
    session: ort.InferenceSession,
    optimized_path: Path,
    shapes: Mapping[str, Shape],
    threads: int | None,
    config: Mapping[str, str] | None,
) -> ort.InferenceSession:
    """A session of ORT's optimised graph (saved at ``optimized_path`` by ``session``) with its channel gates
    rewritten, if any is and it computes what ``session`` does on one random input; else ``session``.

    The check guards the one assumption this rewrite makes about ORT's internals (an NCHWc convolution reads a
    non-constant filter as it is, ``nchwc_ops.cc``): another ONNX Runtime that broke it is caught here and
    costs speed, not correctness. Tolerance: the rewrite rounds the same products and sums (bit-identical on
    AVX-512); a kernel that fuses the multiply and the add rounds once instead of twice per element, which a
    deep network turns into relative differences near 1e-6; a layout error gives differences of the outputs'
    own size. 1e-4 of the largest output separates the two by two orders of magnitude either way.
    """
    optimized = onnx.load(str(optimized_path))
    if not fuse_blocked_gates(optimized, shapes):
        return session
    feed = random_feed(session)
    if feed is None:
        return session
    options = session_options(threads, config)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # optimised already
    try:
        rewritten = _session(optimized.SerializeToString(), options, ["CPUExecutionProvider"])
        got = rewritten.run(None, feed)
    except Exception as exc:  # ORT refusing the rewritten graph: the same outcome as a wrong answer
        log.warning(
            "ONNX Runtime refused its blocked gates (%s); running its plain graph", exception_summary(exc)
        )
        return session
    for want, have in zip(session.run(None, feed), got, strict=True):
        scale = float(np.max(np.abs(want))) if want.size else 0.0
        if (
            want.shape != have.shape
            or not float(np.max(np.abs(want - have), initial=0.0)) <= 1e-4 * scale + 1e-6
        ):
            log.warning(
                "ONNX Runtime's blocked gates differ from its plain graph here; running its plain graph"
            )
            return session
    return rewritten


def random_feed(session: ort.InferenceSession, side: int = 64) -> dict[str, np.ndarray] | None:
    """Standard-normal float32 inputs for ``session`` (dynamic dims: 1 for the batch, ``side`` for others), or
    None when an input is not float32."""
    feed = {}
    for value in session.get_inputs():
        if value.type != "tensor(float)":
            return None
        dims = [d if isinstance(d, int) else (1 if k == 0 else side) for k, d in enumerate(value.shape)]
        feed[value.name] = np.random.default_rng(0).standard_normal(dims).astype(np.float32)
    return feed


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
