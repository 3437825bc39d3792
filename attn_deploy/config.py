"""Typed export configs: one YAML per deploy target in ``export_configs/``.

A config file maps the fields of :class:`ExportConfig`; nested sections map to the nested dataclasses.
``extends: other.yaml`` (relative to the file) loads that file first and deep-merges this one over it.
The target ``name`` is the file's own ``name`` key, else its stem: it is never inherited.

Every key is checked: an unknown key or a bad value raises :class:`~attn_deploy.errors.ConfigError` with a
one-line message naming the key and what is allowed, e.g.::

    export_configs/x.yaml: unknown key 'precison'; allowed: name, runtime, precision, ...
    export_configs/x.yaml: precision: 'fp8' is not allowed; use one of fp32, fp16, int8
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from attn_deploy.errors import ConfigError
from attn_deploy.fsutil import check_name

Precision = Literal["fp32", "fp16", "int8"]
Runtime = Literal["onnxruntime", "tensorrt"]
CalibrationMethodName = Literal["minmax", "entropy", "percentile"]
ActivationType = Literal["int8", "uint8"]

MAX_BATCH = 256
"""Largest batch of an export or benchmark sample and of a Triton ``max_batch_size`` (a dynamic-batch export
takes any batch at run time)."""
MIN_SIDE, MAX_SIDE = 8, 4096
"""Bounds of an input height or width given by the user (8: the smallest synthetic image), a TensorRT profile's
included."""

PACKAGE_CONFIG_DIR = Path(__file__).resolve().parent / "export_configs"  # shipped in the wheel


@dataclass(frozen=True)
class DynamicConfig:
    """Which input dimensions stay dynamic, and how TensorRT profiles are derived when none are given."""

    batch: bool = False
    hw: bool = False
    max_batch: int = 16  # derived profile: batch range 1..max_batch, opt = export batch
    hw_range: tuple[float, float] = (0.5, 2.0)  # derived profile: H, W as multiples of the export size
    hw_multiple: int = 32  # derived H, W are rounded to this (the model's largest stride)

    def __post_init__(self) -> None:
        _check(self.max_batch >= 1, "max_batch", self.max_batch, "an integer >= 1")
        lo, hi = self.hw_range
        _check(0 < lo <= 1 <= hi, "hw_range", list(self.hw_range), "[low, high] with 0 < low <= 1 <= high")
        _check(self.hw_multiple >= 1, "hw_multiple", self.hw_multiple, "an integer >= 1")


@dataclass(frozen=True)
class ShapeProfile:
    """A TensorRT optimization profile for one input: the smallest, typical and largest shape."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def __post_init__(self) -> None:
        ok = len(self.min) == len(self.opt) == len(self.max) and all(
            1 <= a <= b <= c for a, b, c in zip(self.min, self.opt, self.max, strict=True)
        )
        _check(
            ok,
            "min/opt/max",
            [list(self.min), list(self.opt), list(self.max)],
            "min <= opt <= max, same rank",
        )


@dataclass(frozen=True)
class Fp16Config:
    """Mixed-precision policy of the FP16 graph conversion (see :mod:`attn_deploy.precision.policy`)."""

    keep_io_fp32: bool = True  # graph inputs and outputs stay float32; casts are added inside
    keep_fp32_ops: tuple[str, ...] = (
        "InstanceNormalization",
        "GroupNormalization",
        "LayerNormalization",
        "Softmax",
        "LogSoftmax",
        "ReduceSum",
        "ReduceSumSquare",
        "ReduceL2",
        "ReduceLogSumExp",
    )
    keep_norm_patterns: bool = True  # decomposed mean/variance chains (x - mean)^2 -> mean stay FP32
    large_reduction: int = (
        4096  # ReduceMean / GlobalAveragePool over >= this many elements (or unknown) stay FP32
    )

    def __post_init__(self) -> None:
        _check(self.large_reduction >= 1, "large_reduction", self.large_reduction, "an integer >= 1")


@dataclass(frozen=True)
class Int8Config:
    """Q/DQ quantization and its calibration."""

    calibration: CalibrationMethodName = "percentile"
    num_images: int = 32
    percentile: float = 99.999
    seed: int = 0  # seed of the built-in synthetic calibration set
    per_channel: bool = True  # per-output-channel weight scales (TensorRT explicit quantization)
    symmetric: bool = True  # symmetric activations (zero point 0), as TensorRT expects; weights always are
    activations: ActivationType = "int8"  # uint8 (with symmetric: false) is ONNX Runtime's fast x86 format
    keep_gates_fp: bool = False  # attention gates (sigmoid/softmax and their scaling Mul) left unquantized
    gate_op_types: tuple[str, ...] = ("Sigmoid", "HardSigmoid", "Softmax")
    outer_gates_fp: bool = False  # products of two directional gates (CoordAtt, EMA) left unquantized
    pack_narrow_convs: int = 0  # convolutions narrower than this run packed over the batch (0: off)
    windowed_max_pool: bool = False  # GlobalMaxPool over a static H x W as a MaxPool window (uint8 in ORT)
    channel_mean_conv: bool = False  # mean over channels (CBAM) as a 1x1 Conv of weights 1/C (uint8 in ORT)
    exclude_op_types: tuple[str, ...] = ()  # further op types never quantized
    op_types: tuple[str, ...] = ()  # op types that get Q/DQ (empty: every type ONNX Runtime can quantize)
    fallback_cosine: float | None = None  # keep leading layers in float until INT8 vs FP32 cosine >= this
    sensitive_float: int = 0  # keep this many of the most INT8-sensitive weighted layers in float (searched)
    float_regions: Literal["fp32", "fp16"] = "fp32"  # fp16: what stays float runs FP16 (fp16 policy applies)
    cache_dir: str | None = None  # calibration cache; default $XDG_CACHE_HOME/attn-deploy/calibration

    def __post_init__(self) -> None:
        _check(self.num_images >= 1, "num_images", self.num_images, "an integer >= 1")
        _check(0 < self.percentile <= 100, "percentile", self.percentile, "a number in (0, 100]")
        ok = self.fallback_cosine is None or 0 < self.fallback_cosine <= 1
        _check(ok, "fallback_cosine", self.fallback_cosine, "a number in (0, 1] or null")
        _check_int_in("sensitive_float", self.sensitive_float, 1000)
        _check_int_in("pack_narrow_convs", self.pack_narrow_convs, 256, " (0: off)")


@dataclass(frozen=True)
class Tolerances:
    """Pass/fail limits of `attn-deploy validate` against PyTorch FP32 (``None``: reported, not checked)."""

    max_abs: float | None = None
    max_rel: float | None = None  # max abs error / max |reference|, per output
    cosine: float = 0.9999
    top1: float | None = 0.99  # fraction of images whose top-1 class equals PyTorch's (classifiers)
    box_agreement: float | None = 0.95  # matched decoded boxes (IoU >= box_iou, same class) (detectors)
    anchor_box_agreement: float | None = (
        None  # boxes at PyTorch's best anchors kept (IoU >= box_iou), scores aside
    )
    box_iou: float = 0.9

    def __post_init__(self) -> None:
        for key in ("cosine", "top1", "box_agreement", "anchor_box_agreement", "box_iou"):
            value = getattr(self, key)
            _check(value is None or 0 <= value <= 1, key, value, "a number in [0, 1]")
        for key in ("max_abs", "max_rel"):
            value = getattr(self, key)
            _check(value is None or value > 0, key, value, "a number > 0 or null")


@dataclass(frozen=True)
class ValidationConfig:
    """The evaluation set of `attn-deploy validate`: synthetic images, a seed apart from calibration's."""

    num_images: int = 8
    seed: int = 1000
    batch: int = 1

    def __post_init__(self) -> None:
        _check(self.num_images >= 1, "num_images", self.num_images, "an integer >= 1")
        _check(self.batch >= 1, "batch", self.batch, "an integer >= 1")


@dataclass(frozen=True)
class TensorRTConfig:
    """TensorRT builder settings (used only when ``runtime: tensorrt``)."""

    workspace_mib: int = 4096
    optimization_level: int = 3  # IBuilderConfig.builder_optimization_level, 0..5
    timing_cache: str | None = None  # path; default next to the engine cache
    engine_cache_dir: str | None = None  # default $XDG_CACHE_HOME/attn-deploy/engines

    def __post_init__(self) -> None:
        _check(self.workspace_mib >= 1, "workspace_mib", self.workspace_mib, "an integer >= 1")
        _check(
            0 <= self.optimization_level <= 5, "tensorrt.optimization_level", self.optimization_level, "0..5"
        )


@dataclass(frozen=True)
class ExportConfig:
    """One deploy target: runtime, precision, shapes, precision policy, tolerances and builder settings."""

    name: str = "ort-fp32"
    runtime: Runtime = "onnxruntime"
    precision: Precision = "fp32"
    opset: int = 18
    dynamic: DynamicConfig = field(default_factory=DynamicConfig)
    profiles: dict[str, ShapeProfile] = field(
        default_factory=dict
    )  # input name -> profile; overrides derived
    fp16: Fp16Config = field(default_factory=Fp16Config)
    int8: Int8Config = field(default_factory=Int8Config)
    tolerances: Tolerances = field(default_factory=Tolerances)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    tensorrt: TensorRTConfig = field(default_factory=TensorRTConfig)

    def __post_init__(self) -> None:
        check_opset(self.opset)
        check_name(self.name, "name")  # the target folder engines/<model>/<name>
        if self.runtime == "tensorrt" and self.precision == "int8":
            # TensorRT explicit quantization takes signed INT8 with zero point 0 only.
            _check(
                self.int8.activations == "int8",
                "int8.activations",
                self.int8.activations,
                "int8 for TensorRT",
            )
            _check(self.int8.symmetric, "int8.symmetric", self.int8.symmetric, "true for TensorRT")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists), e.g. for a manifest."""
        return _plain(dataclasses.asdict(self))


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {value!r} is not allowed; use {allowed}")


def _check_int_in(key: str, value: Any, high: int, note: str = "") -> None:
    """An integer 0..``high`` (not a bool, which Python counts as one), else a one-line ``ConfigError``."""
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= high
    _check(ok, key, value, f"an integer 0..{high}{note}")


def check_opset(opset: int, key: str = "opset") -> int:
    """``opset`` if TensorRT and ONNX Runtime both take it (17..20), else a one-line ``ConfigError``."""
    _check(17 <= opset <= 20, key, opset, "17..20 (GroupNormalization-21 breaks TensorRT 10)")
    return opset


def default_cache_dir(kind: str) -> Path:
    """``$XDG_CACHE_HOME/attn-deploy/<kind>`` (``~/.cache`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "attn-deploy" / kind


# ----------------------------------------------------------------------------------------------- loading


def find_config(name_or_path: str | os.PathLike[str]) -> Path:
    """Resolve a config path, or a bare target name (``trt-fp16``) looked up in ``export_configs/``."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.is_dir():
        raise ConfigError(f"config '{path}' is a folder; give a YAML file, e.g. export_configs/ort-fp16.yaml")
    for folder in (Path.cwd() / "export_configs", PACKAGE_CONFIG_DIR):
        for candidate in (folder / path.name, folder / f"{path.name}.yaml"):
            if candidate.is_file():
                return candidate
    raise ConfigError(
        f"config {str(name_or_path)!r} not found; give a YAML path or one of: {_shipped_names()}"
    )


def _shipped_names() -> str:
    """The shipped targets' names, comma-separated, for error messages."""
    return ", ".join(sorted(p.stem for p in PACKAGE_CONFIG_DIR.glob("*.yaml")))


def load_config(
    name_or_path: str | os.PathLike[str], overrides: dict[str, Any] | None = None
) -> ExportConfig:
    """Load and check a config (following ``extends``); ``overrides`` maps dotted keys to values.

    >>> load_config("ort-int8", {"int8.calibration": "entropy"}).int8.calibration
    'entropy'
    """
    path = find_config(name_or_path)
    data = _read_merged(path.resolve(), ())
    data["name"] = data.get("name") or path.stem
    for dotted, value in (overrides or {}).items():
        _set_dotted(data, dotted, value)
    try:
        return _build(ExportConfig, data, "")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def replace_config(config: ExportConfig, overrides: dict[str, Any]) -> ExportConfig:
    """A copy of ``config`` with dotted-key ``overrides`` applied and checked like a file."""
    data = config.to_dict()
    for dotted, value in overrides.items():
        _set_dotted(data, dotted, value)
    return _build(ExportConfig, data, "")


def _read_merged(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    if path in seen:
        raise ConfigError(f"{path}: 'extends' forms a cycle: {' -> '.join(p.name for p in (*seen, path))}")
    if not path.is_file():
        raise ConfigError(
            f"{seen[-1] if seen else path}: extends a missing file {str(path)!r}; give a path relative to "
            f"this file or a shipped target: {_shipped_names()}"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a UTF-8 text file; give a YAML config") from None
    except RecursionError:
        raise ConfigError(f"{path} nests too deeply to be a config; fix the file") from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read {path} ({exc.strerror or exc}); check the path and its permissions"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} is not valid YAML; fix the syntax") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config keys")
    parent = data.pop("extends", None)
    own_name = data.pop("name", None)
    try:
        _check_keys(ExportConfig, data, "")  # here, so the message names the file that holds the key
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if parent is None:
        merged: dict[str, Any] = {}
    elif isinstance(parent, str):
        merged = _read_merged(_parent_config(path, parent), (*seen, path))
        merged.pop("name", None)
    else:
        raise ConfigError(f"{path}: extends: {parent!r} is not allowed; use a relative file name")
    merged = _deep_merge(merged, data)
    if own_name is not None:
        merged["name"] = own_name
    return merged


def _parent_config(path: Path, parent: str) -> Path:
    """The file ``extends: parent`` names: relative to ``path``'s folder, else, for a bare name, ``<name>.yaml``
    there or a shipped target (``extends: ort-int8``), so a user's config can build on a shipped one."""
    relative = (path.parent / parent).resolve()
    if relative.is_file() or Path(parent).name != parent:
        return relative
    for folder in (path.parent, PACKAGE_CONFIG_DIR):
        for candidate in (folder / parent, folder / f"{parent}.yaml"):
            if candidate.is_file():
                return candidate.resolve()
    return relative


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "profiles":
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {key!r} is not a section")
    node[last] = value


def _build(cls: type, data: Any, prefix: str) -> Any:
    """Instantiate dataclass ``cls`` from ``data``, checking every key and value against the type hints."""
    where = prefix.rstrip(".") or "config"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    _check_keys(cls, data, prefix)
    kwargs = {key: _convert(hints[key], value, f"{prefix}{key}") for key, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as exc:  # a range check in __post_init__ names the field without its section
        raise ConfigError(f"{prefix}{exc}") from None


def _check_keys(cls: type, data: Any, prefix: str) -> None:
    """An unknown key in ``data`` (and in its sections that are dataclasses) is a one-line ``ConfigError``,
    clipped: a file that is not a config (``extends: /etc/passwd``) is not echoed whole."""
    if not isinstance(data, dict):
        return  # a section that is not a mapping is _build's to report, with its value
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key, value in data.items():
        if key not in names:
            shown = prefix + str(key)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise ConfigError(f"unknown key {shown!r}; allowed: {', '.join(names)}")
        if dataclasses.is_dataclass(hints[key]):
            _check_keys(hints[key], value, f"{prefix}{key}.")


def _convert(hint: Any, value: Any, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, f"{key}.")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not allowed; use one of {', '.join(map(str, args))}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: {value!r} is not allowed; use a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, key) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{key}: {value!r} is not allowed; use a list of {len(args)} values")
        return tuple(_convert(a, v, key) for a, v in zip(args, value, strict=True))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: {value!r} is not allowed; use a mapping")
        return {str(k): _convert(args[1], v, f"{key}.{k}") for k, v in value.items()}
    return _scalar(hint, value, key)


def _scalar(hint: Any, value: Any, key: str) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: {value!r} is not allowed; use true or false")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: {value!r} is not allowed; use an integer")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: {value!r} is not allowed; use a number")
    if hint is str:
        if isinstance(value, str) and value:
            return value
        raise ConfigError(f"{key}: {value!r} is not allowed; use a non-empty string")
    raise TypeError(
        f"config field {key} has an unsupported type {hint!r}"
    )  # a bug in this module, not user input


PLAIN_TARGET = "ort-fp32"
"""The config (and target folder) of an export given neither ``--config`` nor ``--precision``."""


def resolve_export_config(
    config: str | os.PathLike[str] | None = None,
    precision: str | None = None,
    *,
    dynamic: bool = False,
    dynamic_hw: bool | None = None,
    opset: int | None = None,
    calib_method: str | None = None,
    calib_dir: str | os.PathLike[str] | None = None,
) -> ExportConfig:
    """The config of an `attn-deploy export` call, from ``--config`` and the shortcuts. A plain FP32 export
    (neither ``config`` nor ``precision``) is ``ort-fp32`` with the requested dynamic axes and opset, still
    named ``ort-fp32`` (its target folder, as always).

    ``--precision P`` alone means ``ort-P`` (``ort-P-dynamic`` with ``--dynamic``); with ``--config`` it must
    agree with the config. ``--dynamic`` on a static config makes both axes dynamic and names the target
    ``<name>-dynamic``; ``--dynamic-batch`` (``dynamic_hw=False``) makes the batch alone dynamic, target
    ``<name>-dynamic-batch``. ``--calib-method`` and ``--calib-dir`` need an INT8 target.
    """
    if opset is not None:
        check_opset(opset, "--opset")
    hw = dynamic if dynamic_hw is None else dynamic_hw and dynamic
    if config is None and precision is None:
        if calib_method or calib_dir:
            raise ConfigError("--calib-method/--calib-dir need --precision int8 or an int8 --config")
        plain: dict[str, Any] = {"dynamic.batch": dynamic, "dynamic.hw": hw}
        if opset is not None:
            plain["opset"] = opset
        return replace_config(load_config(PLAIN_TARGET), plain)
    suffix = "-dynamic" if dynamic and hw else ""
    loaded = load_config(config if config is not None else f"ort-{precision}{suffix}")
    if precision is not None and precision != loaded.precision:
        raise ConfigError(
            f"--precision {precision} contradicts {loaded.name} (precision {loaded.precision}); "
            f"drop one of them or use a {precision} config"
        )
    overrides: dict[str, Any] = {}
    if dynamic and hw and not (loaded.dynamic.batch and loaded.dynamic.hw):
        overrides.update({"dynamic.batch": True, "dynamic.hw": True, "name": f"{loaded.name}-dynamic"})
    elif dynamic and not hw and (loaded.dynamic.hw or not loaded.dynamic.batch):
        name = f"{loaded.name.removesuffix('-dynamic')}-dynamic-batch"
        overrides.update({"dynamic.batch": True, "dynamic.hw": False, "name": name})
    if opset is not None:
        overrides["opset"] = opset
    if (calib_method or calib_dir) and loaded.precision != "int8":
        raise ConfigError(
            f"--calib-method/--calib-dir apply to int8 targets; {loaded.name} is {loaded.precision}"
        )
    if calib_method is not None:
        overrides["int8.calibration"] = calib_method
    return replace_config(loaded, overrides) if overrides else loaded
