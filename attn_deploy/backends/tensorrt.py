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
from attn_deploy.backends.engine_cache import EngineCache, engine_cache_key
from attn_deploy.config import ExportConfig, ShapeProfile
from attn_deploy.errors import ConfigError, ExportError, InputError, UnsupportedOpError
from attn_deploy.fsutil import sha256_file, write_bytes

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


def gpu_identity() -> str:
    """The GPU engines are built for: name and compute capability (``"NVIDIA H100 ... (sm_90)"``)."""
    import torch  # CUDA: torch only when a GPU is asked about (this module stays torch-free)

    if not torch.cuda.is_available():
        raise InputError(
            "no CUDA GPU is visible; TensorRT engines need an NVIDIA GPU and a CUDA build of torch"
        )
    major, minor = torch.cuda.get_device_capability(0)
    return f"{torch.cuda.get_device_name(0)} (sm_{major}{minor})"


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


def build_settings(config: ExportConfig, profiles: Mapping[str, ShapeProfile]) -> dict[str, Any]:
    """What the engine depends on besides the ONNX, TensorRT and GPU (part of the cache key)."""
    return {
        "profiles": {n: [list(p.min), list(p.opt), list(p.max)] for n, p in sorted(profiles.items())},
        "workspace_mib": config.tensorrt.workspace_mib,
        "optimization_level": config.tensorrt.optimization_level,
        "strongly_typed": True,
    }


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


def build_engine(
    onnx_path: str | os.PathLike[str],
    config: ExportConfig,
    profiles: Mapping[str, ShapeProfile],
    cache: EngineCache | None = None,
) -> EngineBuild:
    """Compile ``onnx_path`` (precision already in the graph), or load the cached engine for the same key."""
    version = require_tensorrt()
    import tensorrt as trt  # optional: checked by require_tensorrt() above

    start = time.perf_counter()
    gpu = gpu_identity()
    settings = build_settings(config, profiles)
    key = engine_cache_key(sha256_file(onnx_path), version, gpu, settings)
    cache = cache or EngineCache.at(config.tensorrt.engine_cache_dir)
    cached = cache.load(key)
    if cached is not None:
        return EngineBuild(cached, key, True, time.perf_counter() - start, version, gpu, settings)

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise UnsupportedOpError(
            f"TensorRT cannot parse {onnx_path}: {errors[0] if errors else 'unknown error'}"
        )
    builder_config = builder.create_builder_config()
    builder_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.tensorrt.workspace_mib << 20)
    builder_config.builder_optimization_level = config.tensorrt.optimization_level
    timing_path = Path(config.tensorrt.timing_cache or cache.folder / "timing.cache")
    timing = builder_config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
    builder_config.set_timing_cache(timing, ignore_mismatch=False)
    if any(p.min != p.max for p in profiles.values()):
        profile = builder.create_optimization_profile()
        for name, p in profiles.items():
            profile.set_shape(name, trt.Dims(list(p.min)), trt.Dims(list(p.opt)), trt.Dims(list(p.max)))
        builder_config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, builder_config)
    if plan is None:
        raise ExportError(f"TensorRT failed to build an engine from {onnx_path}; see the TensorRT log above")
    write_bytes(timing_path, bytes(builder_config.get_timing_cache().serialize()))
    data = bytes(plan)
    cache.save(key, data, {"onnx": str(onnx_path), "tensorrt": version, "gpu": gpu, "settings": settings})
    return EngineBuild(data, key, False, time.perf_counter() - start, version, gpu, settings)


# -------------------------------------------------------------------------------------------- runner (GPU)


class TensorRTRunner(RunnerBase):
    """Run a serialized TensorRT engine with named tensors and ``execute_async_v3``."""

    name = "tensorrt"

    def __init__(self, plan: bytes | str | os.PathLike[str]) -> None:
        self.plan = plan
        self._engine: Any = None
        self._context: Any = None
        self._inputs: list[str] = []
        self._outputs: list[str] = []

    def activate(self) -> None:
        """Deserialize the engine and create an execution context (once)."""
        if self._context is not None:
            return
        require_tensorrt()
        import tensorrt as trt  # optional: checked by require_tensorrt() above

        data = self.plan if isinstance(self.plan, bytes) else Path(self.plan).read_bytes()
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise InputError(
                "TensorRT cannot load this engine (built by another TensorRT version or GPU?); rebuild"
            )
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._engine, self._context = engine, engine.create_execution_context()

    def deactivate(self) -> None:
        """Free the context and engine."""
        self._context = self._engine = None

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
        """Copy inputs to the GPU, run one batch on the current torch CUDA stream, copy outputs back."""
        import torch  # CUDA: buffers and stream on the GPU (this module stays torch-free)

        self.activate()
        engine, context = self._engine, self._context
        stream = torch.cuda.current_stream()
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
        outputs = {}
        for name in self._outputs:
            shape = tuple(context.get_tensor_shape(name))
            out = torch.empty(shape, dtype=_torch_dtype(engine.get_tensor_dtype(name)), device="cuda")
            context.set_tensor_address(name, out.data_ptr())
            outputs[name] = out
        if not context.execute_async_v3(stream.cuda_stream):
            raise ExportError("TensorRT execution failed; see the TensorRT log above")
        stream.synchronize()
        return {name: out.cpu().numpy() for name, out in outputs.items()}


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
