"""Read a PyTorch checkpoint without running code from it: a restricted unpickler over torch's zip archive.

``torch.save`` writes a zip archive: ``<name>/data.pkl`` (a pickle) and one record per storage
(``<name>/data/<key>``, uncompressed, 64-byte aligned). :func:`read_checkpoint` unpickles ``data.pkl`` with an
unpickler whose ``find_class`` resolves only torch's tensor-rebuild functions, storage types and plain
containers (``dict``, ``list``, ``OrderedDict``, ...); every other class or function named in the file becomes
an inert :class:`Record` subclass with the same dotted name. Calling a record (pickle's REDUCE, NEWOBJ) stores
its arguments, BUILD stores its state, SETITEMS/APPENDS store items: nothing from the file ever runs. A
``__reduce__`` payload such as ``os.system("...")`` thus becomes a record named ``os.system`` holding the
command string. (Same idea as torch's ``weights_only`` unpickler, ``torch/_weights_only_unpickler.py``, which
refuses unknown classes instead of recording them; we need their attributes: a pickled Ultralytics
``DetectionModel`` keeps its layers, yaml and class names there.)

Storages are mapped from the file (``mmap``, copy-on-write) and never copied while reading: reading a 50 MB
checkpoint touches only the pickle and the pages of the tensors a caller uses.

:func:`module_state_dict` walks the records of a pickled ``nn.Module`` (``_modules``, ``_parameters``,
``_buffers``) into the state_dict ``module.state_dict()`` would have given. :func:`load_trusted` is the only
path that unpickles code (``weights_only=False``), behind the CLI's ``--trust-checkpoint``.
"""

from __future__ import annotations

import _compat_pickle
import io
import mmap
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import torch

from attn_deploy.errors import WeightsError, exception_summary

MAX_PICKLE_BYTES = 256 << 20
"""Largest ``data.pkl`` read (tensors live outside it: a yolov8m's is ~100 KB)."""
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # zip local file header: 30 bytes, name and extra lengths last

_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "UntypedStorage": torch.uint8,
}


class Record:
    """An object named in a checkpoint, kept inert: the class or function name, the arguments it was called with
    (``args``), its pickled state (``state``, usually the ``__dict__``), and items pickle added to it."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Record:
        obj = object.__new__(cls)
        obj.__dict__.update(args=args, kwargs=kwargs, state=None, items={}, elements=[])
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # a REDUCE "call": arguments kept by __new__
        pass

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        """pickle's APPEND on a list subclass."""
        self.elements.append(value)

    def extend(self, values: Any) -> None:
        """pickle's APPENDS on a list subclass."""
        self.elements.extend(values)

    def add(self, value: Any) -> None:
        """pickle's ADDITEMS on a set subclass."""
        self.elements.append(value)

    @classmethod
    def class_path(cls) -> str:
        """The dotted name the checkpoint gave (``ultralytics.nn.tasks.DetectionModel``)."""
        return f"{cls.__module__}.{cls.__qualname__}"

    @property
    def attributes(self) -> dict[str, Any]:
        """The pickled ``__dict__`` (``{}`` when the state is not one)."""
        state = self.state
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
            state = state[0]  # (dict state, slot state)
        return state if isinstance(state, dict) else {}

    def __repr__(self) -> str:
        return f"<record {self.class_path()}>"


@cache
def record_class(module: str, name: str) -> type[Record]:
    """The inert stand-in for ``module.name`` (one class per name, so ``isinstance`` and names work)."""
    return type(name, (Record,), {"__module__": module, "__qualname__": name})


class _StorageType:
    """A storage class named in the file (``torch.HalfStorage``): only its dtype matters."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


def _rebuild_tensor_v2(
    storage: torch.Tensor,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> torch.Tensor:
    """``torch._utils._rebuild_tensor_v2`` over our 1-D storage view (hooks and metadata dropped); the view must
    lie inside its own storage record (torch checks only the whole mapped file)."""
    size, stride, offset = tuple(size), tuple(stride), int(storage_offset)
    if len(size) != len(stride) or offset < 0 or any(d < 0 for d in (*size, *stride)):
        raise pickle.UnpicklingError(f"tensor with size {size}, stride {stride}, offset {offset}")
    last = offset + sum((d - 1) * s for d, s in zip(size, stride, strict=True)) if all(size) else -1
    if last >= storage.numel():
        raise pickle.UnpicklingError(
            f"tensor of size {size} reaches past its storage of {storage.numel()} elements"
        )
    return storage.as_strided(size, stride, storage.storage_offset() + offset)


def _rebuild_tensor_v3(
    storage: torch.Tensor,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool,
    backward_hooks: Any,
    dtype: torch.dtype,
    metadata: Any = None,
) -> torch.Tensor:
    return _rebuild_tensor_v2(storage.view(torch.uint8).view(dtype), storage_offset, size, stride)


def _rebuild_parameter(data: torch.Tensor, *args: Any) -> torch.Tensor:
    """A parameter is kept as its tensor (``requires_grad``, hooks and Python state dropped)."""
    return data


def _rebuild_from_type_v2(func: Callable[..., Any], new_type: Any, args: tuple, state: Any) -> Any:
    """``torch._tensor._rebuild_from_type_v2``: the tensor ``func`` rebuilds; subclass type and state dropped.
    ``func`` came through our ``find_class``, so it is a rebuild function above or an inert record."""
    return func(*args)


_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "int"): int,
    ("builtins", "float"): float,
    ("builtins", "bool"): bool,
    ("builtins", "str"): str,
    ("builtins", "complex"): complex,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch.tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
}
"""What a name in the file may resolve to; everything else becomes a :class:`Record`."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only :data:`_GLOBALS` and storage types; storages come from ``storages(key, dtype, numel)``."""

    def __init__(self, file: Any, storages: Callable[[str, torch.dtype, int], torch.Tensor]) -> None:
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        # protocol 2 (torch.save's) writes Python 2 names (__builtin__.set, copy_reg): map them as pickle does
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if module in ("torch", "torch.storage") and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        return _GLOBALS.get((module, name)) or record_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] in ("storage", b"storage")):
            raise pickle.UnpicklingError(f"unknown persistent id {str(pid)[:80]}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType) or not isinstance(numel, int):
            raise pickle.UnpicklingError(f"unknown storage type {storage_type!r}")
        key = key.decode() if isinstance(key, bytes) else str(key)
        return self._storages(key, storage_type.dtype, numel)


class _Archive:
    """A torch zip archive mapped into memory; storages are views of the mapping, created on demand."""

    def __init__(self, path: Path) -> None:
        with zipfile.ZipFile(path) as zf:
            self.infos = {info.filename: info for info in zf.infolist()}
            pickles = [n for n in self.infos if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pickles) != 1:
                raise WeightsError(
                    f"'{path}' is a zip file but not a torch checkpoint (no single <name>/data.pkl); "
                    "pass a file written by torch.save"
                )
            self.prefix = pickles[0].removesuffix("data.pkl")
            if (
                self.infos[pickles[0]].file_size > MAX_PICKLE_BYTES
            ):  # a zip bomb, not a model's pickle (~100 KB)
                raise WeightsError(
                    f"'{path}' has a {self.infos[pickles[0]].file_size} byte pickle; not a checkpoint"
                )
            self.pickle = zf.read(pickles[0])
            order = self.infos.get(self.prefix + "byteorder")
            if order is not None and zf.read(order).strip() != b"little":
                raise WeightsError(
                    f"'{path}' stores big-endian tensors; re-save it on a little-endian machine"
                )
        self.path = path
        with open(path, "rb") as f:
            self._map = mmap.mmap(
                f.fileno(), 0, access=mmap.ACCESS_COPY
            )  # private: writes never reach the file
        self._bytes = torch.frombuffer(self._map, dtype=torch.uint8)
        self._cache: dict[str, torch.Tensor] = {}

    def storage(self, key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        """Storage ``key`` as a 1-D tensor of ``numel`` ``dtype`` elements, viewing the mapped file."""
        if key not in self._cache:
            info = self.infos.get(f"{self.prefix}data/{key}")
            nbytes = numel * torch.empty((), dtype=dtype).element_size()
            if info is None or info.file_size < nbytes:
                raise WeightsError(
                    f"checkpoint '{self.path}' lacks the data of storage {key}; the file is damaged"
                )
            if info.compress_type != zipfile.ZIP_STORED:
                raise WeightsError(
                    f"checkpoint '{self.path}' has compressed storages; re-save it with torch.save"
                )
            header = _LOCAL_HEADER.unpack_from(self._map, info.header_offset)
            start = info.header_offset + _LOCAL_HEADER.size + header[-2] + header[-1]
            raw = self._bytes[start : start + nbytes]
            self._cache[key] = raw if start % 16 == 0 else raw.clone()  # a view by dtype needs alignment
        return self._cache[key][:nbytes].view(dtype)


def read_checkpoint(path: str | os.PathLike[str]) -> Any:
    """The object saved at ``path`` by ``torch.save``, unpickled without running code from the file.

    Tensors, plain containers and ``OrderedDict`` come back as themselves (tensors view the mapped file); any
    other class or function becomes a :class:`Record`. Raises ``WeightsError`` (one line) for a missing,
    truncated or foreign file.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint '{path}' not found; pass the path of a .pt file")
    if not zipfile.is_zipfile(path):
        raise WeightsError(
            f"'{path}' is not a torch zip checkpoint (a truncated file, or one saved by torch < 1.6 or another "
            "tool); re-save it with torch.save"
        )
    try:
        archive = _Archive(path)
        return _RestrictedUnpickler(io.BytesIO(archive.pickle), archive.storage).load()
    except WeightsError:
        raise
    except Exception as exc:  # damaged bytes: a truncated pickle, a bad zip directory, ...
        raise WeightsError(
            f"cannot read checkpoint '{path}' ({type(exc).__name__}: {exception_summary(exc, limit=160)}); "
            "the file is damaged or not written by torch.save"
        ) from exc


def module_state_dict(record: Record, prefix: str = "") -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a pickled ``nn.Module`` kept as records: parameters and persistent buffers of the
    module tree, keys as ``nn.Module.state_dict`` names them."""
    attrs = record.attributes
    state: dict[str, torch.Tensor] = {}
    skip = attrs.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        for name, value in (attrs.get(group) or {}).items():
            if isinstance(value, torch.Tensor) and not (group == "_buffers" and name in skip):
                state[prefix + name] = value
    for name, child in (attrs.get("_modules") or {}).items():
        if isinstance(child, Record):
            state.update(module_state_dict(child, f"{prefix}{name}."))
    return state


def module_records(record: Record, path: str = "") -> list[tuple[str, Record]]:
    """``(path, record)`` of a pickled module and every submodule in it, as ``named_modules`` names them."""
    found = [(path, record)]
    for name, child in (record.attributes.get("_modules") or {}).items():
        if isinstance(child, Record):
            found.extend(module_records(child, f"{path}.{name}" if path else name))
    return found


def is_module_record(obj: Any) -> bool:
    """True for a record of a pickled ``nn.Module`` (it has ``_modules`` and ``_parameters``)."""
    return isinstance(obj, Record) and "_modules" in obj.attributes and "_parameters" in obj.attributes


def load_trusted(path: str | os.PathLike[str]) -> Any:
    """``torch.load(path, weights_only=False)``: RUNS CODE FROM THE FILE (any pickled callable). Only for files
    the user vouched for with ``--trust-checkpoint``; the classes the pickle names must be importable."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint '{path}' not found; pass the path of a .pt file")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # the user's pickle: missing modules, damaged bytes, ...
        raise WeightsError(
            f"cannot load trusted checkpoint '{path}' ({type(exc).__name__}: "
            f"{exception_summary(exc, limit=160)}); the classes it pickles must be importable (install their "
            "package or add it to PYTHONPATH)"
        ) from exc
