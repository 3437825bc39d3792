"""TensorRT backend: compile a precision-specific ONNX graph into an engine, and run it.

Status: written against the documented TensorRT 10/11 Python API and type-checked with ``tensorrt-stubs``
(``make typecheck``); not yet run on a GPU. Everything decided before the compile (precision in the graph,
optimization profiles, cache keys) is plain CPU code with its own tests.

API used (TensorRT Python API reference and migration guides, docs.nvidia.com/deeplearning/tensorrt):

* ``Builder.create_network(1 << NetworkDefinitionCreationFlag.STRONGLY_TYPED)``: required for strong typing on
  10.x, accepted and ignored on 11.x where every network is strongly typed ("Migrating from TensorRT 10.x to
  11.x: Strongly Typed Networks Are Now Required"). Precision therefore comes from the ONNX graph; no
  FP16/INT8 builder flags (removed in 11.x).
* ``OnnxParser.parse_from_file``, ``IBuilderConfig.set_memory_pool_limit(MemoryPoolType.WORKSPACE, bytes)``,
  ``builder_optimization_level`` (0..5, default 3), ``create_timing_cache`` / ``set_timing_cache`` /
  ``get_timing_cache().serialize()``, ``IOptimizationProfile.set_shape(name, min, opt, max)``,
  ``Builder.build_serialized_network``.
* Runtime: ``Runtime.deserialize_cuda_engine``, named I/O tensors (``num_io_tensors``, ``get_tensor_name``,
  ``get_tensor_mode``, ``get_tensor_dtype``), ``IExecutionContext.set_input_shape``,
  ``set_tensor_address`` and ``execute_async_v3(stream)`` ("Migrating Python Code from TensorRT 8.x to
  10.x: name-based tensor API, enqueueV3").

Device buffers are torch CUDA tensors (a CUDA build of torch is needed on the GPU machine).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attn_deploy.backends.base import RunnerBase
from attn_deploy.backends.engine_cache import (
    EngineCache,
    engine_cache_key,
    file_lock,
    onnx_digest,
    timing_cache_name,
)
from attn_deploy.config import MAX_BATCH, MAX_SIDE, ExportConfig, ShapeProfile
from attn_deploy.errors import ConfigError, ExportError, InputError, UnsupportedOpError
from attn_deploy.fsutil import write_bytes

NOT_INSTALLED = "TensorRT is not installed: pip install attn-deploy[trt] on a machine with an NVIDIA GPU"


def require_tensorrt() -> str:
    """The installed TensorRT version, or an :class:`InputError` saying how to get it.

    ``tensorrt-stubs`` (type hints only) makes ``import tensorrt`` succeed as an empty namespace package,
    so a real installation is recognised by its ``Builder`` class, not by the import.
    """
    try:
        import tensorrt as trt  # optional: TensorRT is imported only where it is asked for
    except ImportError:
        raise InputError(NOT_INSTALLED) from None
    version = getattr(trt, "__version__", None)
    if not version or not hasattr(trt, "Builder"):
        raise InputError(NOT_INSTALLED)
    return str(version)


def cuda_device_index() -> int:
    """The CUDA device TensorRT builds and runs on (torch's current device; ``CUDA_VISIBLE_DEVICES`` applies)."""
    import torch  # CUDA: torch only when a GPU is asked about (this module stays torch-free)

    if not torch.cuda.is_available():
        raise InputError(
            "no CUDA GPU is visible; TensorRT engines need an NVIDIA GPU and a CUDA build of torch"
        )
    return int(torch.cuda.current_device())


def gpu_identity(device: int | None = None) -> str:
    """The GPU engines are built for: name and compute capability (``"NVIDIA H100 ... (sm_90)"``)."""
    import torch  # CUDA: torch only when a GPU is asked about (this module stays torch-free)

    index = cuda_device_index() if device is None else device
    major, minor = torch.cuda.get_device_capability(index)
    return f"{torch.cuda.get_device_name(index)} (sm_{major}{minor})"


# ------------------------------------------------------------------------------------------ profiles (CPU)


def resolve_profiles(
    config: ExportConfig, inputs: Sequence[Mapping[str, Any]], export_shapes: Mapping[str, Sequence[int]]
) -> dict[str, ShapeProfile]:
    """Optimization profile per input: from ``config.profiles`` (by name, or ``"*"``) or derived.

    ``inputs`` are manifest entries (``{"name", "shape"}``, a string for each dynamic dim); ``export_shapes``
    the concrete shape each input was exported with. Derived profiles: batch ``1..dynamic.max_batch`` with
    the export batch as opt; H, W ``hw_range`` times the export size, rounded to ``hw_multiple``, opt the
    export size. Static dims are fixed. A given profile must agree with the static dims.
    """
    profiles: dict[str, ShapeProfile] = {}
    for entry in inputs:
        name, dims = str(entry["name"]), list(entry["shape"])
        export = [int(d) for d in export_shapes[name]]
        given = config.profiles.get(name) or config.profiles.get("*")
        profile = given or _derived_profile(config, name, dims, export)
        _check_profile(name, dims, profile)
        profiles[name] = profile
    unknown = sorted(set(config.profiles) - {"*"} - set(profiles))
    if unknown:  # a typo would quietly leave that input on the derived profile
        raise ConfigError(
            f"profiles name no input of the model: {', '.join(map(repr, unknown))}; "
            f"its inputs: {', '.join(profiles)}"
        )
    return profiles


def _derived_profile(config: ExportConfig, name: str, dims: list[Any], export: list[int]) -> ShapeProfile:
    lo, hi, opt = list(export), list(export), list(export)
    dyn = config.dynamic
    for axis, dim in enumerate(dims):
        if isinstance(dim, int):
            continue
        if axis == 0:
            lo[axis], hi[axis] = 1, max(dyn.max_batch, export[axis])
        elif axis in (2, 3) and len(dims) == 4:
            step = dyn.hw_multiple
            lo[axis] = max(step, math.floor(export[axis] * dyn.hw_range[0] / step) * step)
            hi[axis] = max(export[axis], math.ceil(export[axis] * dyn.hw_range[1] / step) * step)
            lo[axis] = min(lo[axis], export[axis])
        else:
            raise ConfigError(
                f"input {name!r} has a dynamic dim {axis} ({dim!r}); give `profiles: {{{name}: ...}}`"
            )
    return ShapeProfile(tuple(lo), tuple(opt), tuple(hi))


def _check_profile(name: str, dims: list[Any], profile: ShapeProfile) -> None:
    if len(profile.min) != len(dims):
        raise ConfigError(
            f"profiles.{name}: rank {len(profile.min)} does not match the input's rank {len(dims)}"
        )
    for axis, dim in enumerate(dims):
        if isinstance(dim, int) and not profile.min[axis] == profile.opt[axis] == profile.max[axis] == dim:
            raise ConfigError(f"profiles.{name}: dim {axis} is static ({dim}) in the model; use {dim} there")
    if profile.max[0] > MAX_BATCH:
        raise ConfigError(
            f"profiles.{name}: max batch {profile.max[0]} is over {MAX_BATCH}; use {MAX_BATCH} or less"
        )
    if len(dims) == 4 and max(profile.max[2:]) > MAX_SIDE:
        raise ConfigError(
            f"profiles.{name}: max H/W {list(profile.max[2:])} is over {MAX_SIDE}; use {MAX_SIDE} or less"
        )


def build_settings(config: ExportConfig, profiles: Mapping[str, ShapeProfile]) -> dict[str, Any]:
    """What the engine depends on besides the ONNX, TensorRT and GPU (part of the cache key)."""
    return {
        "profiles": {n: [list(p.min), list(p.opt), list(p.max)] for n, p in sorted(profiles.items())},
        "workspace_mib": config.tensorrt.workspace_mib,
        "optimization_level": config.tensorrt.optimization_level,
        "strongly_typed": True,
    }


# ------------------------------------------------------------------------------------- build decisions (CPU)


def dynamic_inputs(shapes: Mapping[str, Sequence[int]]) -> list[str]:
    """The network inputs with a dynamic (-1) dimension, in order: each needs an optimization profile.

    Decided from the parsed network, not from the profiles: a dynamic input whose profile has min == max (a
    ``max_batch: 1`` config, a fixed ``profiles:`` entry) still needs one, or the build fails with "no
    optimization profile has been defined".
    """
    return [name for name, dims in shapes.items() if any(int(d) < 0 for d in dims)]


def profiles_for_network(
    shapes: Mapping[str, Sequence[int]], profiles: Mapping[str, ShapeProfile]
) -> dict[str, ShapeProfile]:
    """The profile entries to add for a network whose inputs have ``shapes`` (-1: dynamic); empty when every
    input is static. A ``ConfigError`` names a dynamic input without a profile, or a profile whose rank or
    static dims disagree with the network."""
    dynamic = dynamic_inputs(shapes)
    missing = [n for n in dynamic if n not in profiles]
    if missing:
        raise ConfigError(
            f"input {missing[0]!r} is dynamic in the network but has no profile; give --min-shape/--opt-shape/"
            f"--max-shape {missing[0]}:... or `profiles: {{{missing[0]}: ...}}`"
        )
    for name in dynamic:
        _check_profile(name, [d if int(d) >= 0 else "?" for d in shapes[name]], profiles[name])
    return {name: profiles[name] for name in dynamic}


def unresolved_outputs(shapes: Mapping[str, Sequence[int]]) -> list[str]:
    """Outputs whose shape is still unknown (-1) once every input shape is set: their size depends on the data
    (NonZero, NonMaxSuppression), so a buffer cannot be sized before the run."""
    return [name for name, dims in shapes.items() if any(int(d) < 0 for d in dims)]


# ---------------------------------------------------------------------------------------------- build (GPU)


@dataclass(frozen=True)
class EngineBuild:
    """A serialized engine and where it came from."""

    plan: bytes
    key: str
    cache_hit: bool
    seconds: float
    tensorrt_version: str
    gpu: str
    settings: dict[str, Any]
    timing_cache: str | None = None  # the timing cache file used (None: a cache hit, nothing was timed)
    timing_cache_reused: bool = False  # TensorRT accepted the timing cache on disk


def build_engine(
    onnx_path: str | os.PathLike[str],
    config: ExportConfig,
    profiles: Mapping[str, ShapeProfile],
    cache: EngineCache | None = None,
) -> EngineBuild:
    """Compile ``onnx_path`` (precision already in the graph), or load the cached engine for the same key.

    Follows Polygraphy's ``backend/trt/loader.py`` (``EngineBytesFromNetwork``): one optimization profile for
    the dynamic inputs, a timing cache loaded first and merged back into the file under a lock afterwards.
    """
    version = require_tensorrt()
    import tensorrt as trt  # optional: checked by require_tensorrt() above

    start = time.perf_counter()
    device = cuda_device_index()
    gpu = gpu_identity(device)
    settings = build_settings(config, profiles)
    key = engine_cache_key(onnx_digest(onnx_path), version, gpu, settings, device_index=device)
    cache = cache or EngineCache.at(config.tensorrt.engine_cache_dir)
    cached = cache.load(key)
    if cached is not None:
        return EngineBuild(cached, key, True, time.perf_counter() - start, version, gpu, settings)

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # pyCore.cpp: create_network(flags); STRONGLY_TYPED is required on 10.x, the only mode on 11.x.
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)  # parsers/pyOnnx.cpp: parse_from_file, num_errors, get_error
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise UnsupportedOpError(
            f"TensorRT cannot parse {onnx_path}: {errors[0] if errors else 'unknown error'}"
        )
    builder_config = builder.create_builder_config()
    builder_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.tensorrt.workspace_mib << 20)
    builder_config.builder_optimization_level = config.tensorrt.optimization_level
    timing_path = Path(config.tensorrt.timing_cache or cache.folder / timing_cache_name(version, gpu))
    reused = _attach_timing_cache(builder_config, timing_path)
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    shapes = {t.name: [int(t.shape[d]) for d in range(len(t.shape))] for t in inputs}
    wanted = profiles_for_network(shapes, profiles)
    if wanted:
        profile = builder.create_optimization_profile()
        for name, p in wanted.items():
            profile.set_shape(name, trt.Dims(list(p.min)), trt.Dims(list(p.opt)), trt.Dims(list(p.max)))
        if builder_config.add_optimization_profile(profile) < 0:  # returns the profile index, -1 if invalid
            raise ConfigError(f"TensorRT refused the optimization profile {settings['profiles']}")
    plan = builder.build_serialized_network(network, builder_config)
    if plan is None:
        raise ExportError(f"TensorRT failed to build an engine from {onnx_path}; see the TensorRT log above")
    _save_timing_cache(builder_config, timing_path)
    data = bytes(plan)
    info = {"onnx": str(onnx_path), "tensorrt": version, "gpu": gpu, "device": device, "settings": settings}
    cache.save(key, data, info)
    seconds = time.perf_counter() - start
    return EngineBuild(data, key, False, seconds, version, gpu, settings, str(timing_path), reused)


def _attach_timing_cache(builder_config: Any, path: Path) -> bool:
    """Give the builder the timing cache in ``path``; a fresh one when there is none or TensorRT refuses it
    (another version or GPU: ``set_timing_cache(..., ignore_mismatch=False)`` returns False, pyCore.cpp).
    True when the file on disk was accepted."""
    data = path.read_bytes() if path.is_file() else b""
    if data:
        try:
            cache = builder_config.create_timing_cache(data)
        except Exception:  # a corrupt file: TensorRT raises its own error type
            cache = None
        if cache is not None and builder_config.set_timing_cache(cache, ignore_mismatch=False):
            return True
    fresh = builder_config.create_timing_cache(b"")
    if fresh is None or not builder_config.set_timing_cache(fresh, ignore_mismatch=False):
        raise ExportError("TensorRT could not create a timing cache; see the TensorRT log above")
    return False


def _save_timing_cache(builder_config: Any, path: Path) -> None:
    """Merge what this build timed into ``path`` under a lock (``get_timing_cache`` is None when none is set;
    ``ITimingCache.combine`` keeps what another build wrote meanwhile, as Polygraphy's loader does)."""
    timing = builder_config.get_timing_cache()
    if timing is None:
        return
    with file_lock(path):
        if path.is_file():
            try:
                previous = builder_config.create_timing_cache(path.read_bytes())
            except Exception:  # a corrupt file is replaced by ours
                previous = None
            if previous is not None:
                timing.combine(previous, ignore_mismatch=False)  # False: a foreign cache adds nothing
        write_bytes(path, bytes(timing.serialize()))


# -------------------------------------------------------------------------------------------- runner (GPU)


class TensorRTRunner(RunnerBase):
    """Run a serialized TensorRT engine with named tensors and ``execute_async_v3`` on a stream of its own.

    A dedicated CUDA stream, as NVIDIA's samples and Polygraphy's ``backend/trt/runner.py`` use: on the default
    stream TensorRT adds device-wide synchronisation. Engines with data-dependent output shapes (NonZero, NMS)
    are refused with a clear message instead of failing on a -1 buffer size.
    """

    name = "tensorrt"

    def __init__(self, plan: bytes | str | os.PathLike[str]) -> None:
        self.plan = plan
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._inputs: list[str] = []
        self._outputs: list[str] = []

    def activate(self) -> None:
        """Deserialize the engine, create an execution context and a CUDA stream (once)."""
        if self._context is not None:
            return
        require_tensorrt()
        import tensorrt as trt  # optional: checked by require_tensorrt() above
        import torch  # CUDA: the runner's stream (this module stays torch-free at import)

        data = self.plan if isinstance(self.plan, bytes) else Path(self.plan).read_bytes()
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise InputError(
                "TensorRT cannot load this engine (built by another TensorRT version or GPU?); rebuild it "
                "with `attn-deploy build-engine`"
            )
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        context = engine.create_execution_context()
        if context is None:  # pyCore.cpp returns None when the context cannot be created (device memory)
            raise ExportError("TensorRT could not create an execution context; is the GPU out of memory?")
        self._engine, self._context, self._stream = engine, context, torch.cuda.Stream()

    def deactivate(self) -> None:
        """Free the context, engine and stream."""
        self._context = self._engine = self._stream = None

    @property
    def input_names(self) -> list[str]:
        """Engine input names."""
        self.activate()
        return list(self._inputs)

    @property
    def output_names(self) -> list[str]:
        """Engine output names."""
        self.activate()
        return list(self._outputs)

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Copy inputs to the GPU, run one batch on the runner's stream, copy outputs back."""
        import torch  # CUDA: buffers and stream on the GPU (this module stays torch-free)

        self.activate()
        engine, context, stream = self._engine, self._context, self._stream
        with torch.cuda.stream(stream):  # copies, allocations and the run all go to the runner's stream
            keep_alive = []
            for name in self._inputs:
                dtype = _torch_dtype(engine.get_tensor_dtype(name))
                tensor = torch.from_numpy(np.ascontiguousarray(feed[name])).to("cuda", dtype=dtype)
                if not context.set_input_shape(name, tuple(tensor.shape)):
                    raise InputError(
                        f"input {name!r} shape {tuple(tensor.shape)} is outside the engine's profile"
                    )
                context.set_tensor_address(name, tensor.data_ptr())
                keep_alive.append(tensor)
            shapes = {name: tuple(context.get_tensor_shape(name)) for name in self._outputs}
            unknown = unresolved_outputs(shapes)
            if unknown:
                raise UnsupportedOpError(
                    f"output {unknown[0]!r} has a data-dependent shape {shapes[unknown[0]]} (NonZero, NMS); "
                    "this runner needs output sizes known from the input shapes: export without that op "
                    "(decode boxes and run NMS after the model)"
                )
            outputs = {}
            for name, shape in shapes.items():
                out = torch.empty(shape, dtype=_torch_dtype(engine.get_tensor_dtype(name)), device="cuda")
                context.set_tensor_address(name, out.data_ptr())
                outputs[name] = out
            if not context.execute_async_v3(stream.cuda_stream):
                raise ExportError("TensorRT execution failed; see the TensorRT log above")
            host = {name: out.to("cpu", non_blocking=False) for name, out in outputs.items()}
        stream.synchronize()
        return {name: tensor.numpy() for name, tensor in host.items()}


def _torch_dtype(trt_dtype: Any) -> Any:
    import tensorrt as trt  # optional: only called with a TensorRT engine
    import torch  # CUDA: as in TensorRTRunner.infer

    table = {
        trt.DataType.FLOAT: torch.float32,
        trt.DataType.HALF: torch.float16,
        trt.DataType.BF16: torch.bfloat16,
        trt.DataType.INT8: torch.int8,
        trt.DataType.INT32: torch.int32,
        trt.DataType.INT64: torch.int64,
        trt.DataType.BOOL: torch.bool,
        trt.DataType.UINT8: torch.uint8,
    }
    return table[trt_dtype]
