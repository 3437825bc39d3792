"""Safe file writes: checked names, atomic writes, staging that neither a crash nor Ctrl-C leaves behind.

* :func:`check_name`: the one validator of every name that becomes a file or folder (config, model, target).
* :func:`atomic_path` / :func:`staging`: write to a hidden ``.<name>.<kind>-<pid>-XXXXXXXX[.tmp]`` entry next to
  the target, then rename. The creating process id is in the name: the next staging in the same folder removes
  those of dead processes (a SIGKILL), never a live process's.
* :func:`scratch_dir`: a private temporary folder, removed like staging.
* :func:`exit_on_signals`: SIGINT / SIGTERM end the process at once with status 128 + signal, after removing
  this process's staging and scratch folders; :func:`critical_section` defers them while directories are swapped.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import Any, Literal

from attn_deploy.errors import AttnDeployError, ConfigError

NAME_MAX = 100
"""Longest name :func:`check_name` accepts (file systems allow 255 bytes; staging adds a prefix and suffix)."""
_FORBIDDEN = {"/": "'/'", "\\": "'\\'", "\0": "NUL"}
_STAGING = re.compile(r"^\.(?P<name>.+)\.(?P<kind>new|old|tmp)-(?P<pid>\d+)-[a-z0-9_]+(\.tmp)?$")
_active: dict[Path, list[Path]] = {}  # this process's staging entries -> the folders made for them
_critical = 0  # depth of critical_section blocks
_pending: list[int] = []  # signals that arrived inside one
_announce: Callable[[int], None] | None = None  # set by exit_on_signals


def check_name(
    name: object,
    what: str,
    error: type[AttnDeployError] = ConfigError,
    fix: str = "use one name of letters, digits, '-', '_' or '.', e.g. ort-fp32",
) -> str:
    """``name`` when it is safe as one file or folder name, else ``error`` (one line naming ``what``, ``fix``).

    Safe: a printable string of 1..NAME_MAX characters, one path component (no '/', '\\', NUL), not '.' or
    '..', and not hidden (a leading '.', which staging entries use).
    """
    problem = _name_problem(name)
    if problem:
        raise error(f"{what} {name!r} cannot be a file or folder name ({problem}); {fix}")
    return str(name)


def _name_problem(name: object) -> str | None:
    if not isinstance(name, str) or not name:
        return "it is empty or not text"
    if len(name) > NAME_MAX:
        return f"it is longer than {NAME_MAX} characters"
    found = [label for char, label in _FORBIDDEN.items() if char in name]
    if found:
        return f"it contains {found[0]}"
    if name in (".", ".."):
        return "it names a folder itself or its parent"
    if name.startswith("."):
        return "it starts with '.'"
    if not name.isprintable():
        return "it holds non-printable characters"
    return None


def check_writable_dir(folder: str | os.PathLike[str], what: str = "--out") -> Path:
    """``folder`` if it is, or can be created as, a folder this user writes to; else a one-line ``ConfigError``
    naming the option ``what`` (empty, a file in the way, a parent that is a file or not writable)."""
    if not str(folder).strip():  # an unset shell variable: "" would quietly mean the current folder
        raise ConfigError(f"{what} is empty; give it a folder name")
    folder = Path(folder)
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        where = "it is a file" if existing == folder else f"'{existing}' is a file"
        raise ConfigError(f"{what} '{folder}' cannot be a folder: {where}; choose another {what}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} '{folder}': '{existing}' is not writable; choose another {what}")
    try:  # permission bits do not tell all (root, read-only mounts, /proc): create a file and see
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise ConfigError(
            f"{what} '{folder}': cannot write in '{existing}' ({exc.strerror}); choose another {what}"
        ) from None
    return folder


def _is_stale(entry: Path, pid: int) -> bool:
    """True when the process that made staging ``entry`` is gone: ``pid`` runs no process, or it is this
    process but the entry is not one of its own, or its process started after the entry was last written
    (the pid was reused: a container's processes start from pid 1 again)."""
    if pid == os.getpid():
        return entry.resolve() not in _active
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError, ValueError):
        return False  # another user's process, or not a pid: leave it alone
    started = _process_start(pid)
    try:
        return started is not None and started > entry.lstat().st_mtime + 2
    except OSError:
        return False


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), from Linux ``/proc``; ``None`` elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime, in clock ticks
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _remove(path: Path, made: Sequence[Path] = ()) -> None:
    """Remove ``path`` (file or tree), then the folders in ``made`` (deepest first) while they are empty."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with suppress(OSError):
            path.unlink(missing_ok=True)
    _remove_empty(made)


def _remove_empty(made: Sequence[Path]) -> None:
    """Remove the folders in ``made`` (deepest first) while they are empty."""
    for folder in made:
        try:
            folder.rmdir()
        except OSError:
            break


def remove_stale_staging(parent: Path) -> None:
    """Remove the staging entries of dead processes in ``parent``. A directory that a dead process had moved
    aside (``.<name>.old-<pid>-*``) goes back to ``<name>`` when its replacement never arrived."""
    try:
        entries = list(parent.iterdir())
    except OSError:
        return
    for entry in entries:
        match = _STAGING.match(entry.name)
        if not match or not _is_stale(entry, int(match["pid"])):
            continue
        kept, final = entry / match["name"], parent / match["name"]
        if match["kind"] == "old" and os.path.lexists(kept) and not os.path.lexists(final):
            with suppress(OSError):
                os.replace(kept, final)
        _remove(entry)


@contextmanager
def staging(parent: Path, name: str, kind: Literal["tmp", "new", "old"]) -> Iterator[Path]:
    """A new hidden entry ``.<name>.<kind>-<pid>-XXXXXXXX`` in ``parent``: a file that becomes ``name`` (tmp),
    a directory that becomes ``name`` (new), or one that holds the old ``name`` while it is replaced (old).

    Removed on exit (an old one only once ``name`` exists again; else the next staging here restores it), and
    when a signal ends the process, with the folders made for it while they stay empty. Stale staging of dead
    processes in ``parent`` is removed first.
    """
    made = [p for p in (parent, *parent.parents) if not p.exists()]  # deepest first
    prefix = f".{name}.{kind}-{os.getpid()}-"
    with critical_section():  # a signal waits until the entry and the folders made for it are registered
        try:
            parent.mkdir(parents=True, exist_ok=True)
            if kind == "tmp":
                fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=parent)
                os.close(fd)
                path = Path(tmp)
            else:
                path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        except OSError as exc:  # name what the user asked for, not the hidden staging entry
            _remove_empty(made)
            raise OSError(exc.errno, exc.strerror, str(parent / name)) from None
        if kind == "new":  # mkdtemp's 0700 would become the finished folder's mode
            os.chmod(path, DIR_MODE)
        key = path.resolve()
        _active[key] = made
    remove_stale_staging(parent)
    try:
        yield path
    finally:
        if kind != "old" or os.path.lexists(parent / name):
            _remove(path, made)
        _active.pop(key, None)


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A private folder in the system's temporary directory, removed on exit and, like staging, when a signal
    handled by :func:`exit_on_signals` ends the process (which skips ``tempfile.TemporaryDirectory``'s own
    clean-up: an interrupted INT8 export left its 45 MB FP32 copy behind)."""
    with critical_section():  # registered before a signal can end the process
        path = Path(tempfile.mkdtemp(prefix=prefix))
        key = path.resolve()
        _active[key] = []
    try:
        yield path
    finally:
        _remove(path)
        _active.pop(key, None)


@contextmanager
def critical_section() -> Iterator[None]:
    """A signal handled by :func:`exit_on_signals` waits until this block ends (a swap is never cut in half)."""
    global _critical
    _critical += 1
    try:
        yield
    finally:
        _critical -= 1
        if not _critical and _pending:
            _exit_now(_pending[0])


@contextmanager
def exit_on_signals(announce: Callable[[int], None]) -> Iterator[None]:
    """While active (main thread only), SIGINT and SIGTERM end the process at once: this process's staging is
    removed, ``announce(signum)`` prints, and the exit status is 128 + signum (130 for Ctrl-C).

    No exception unwinds through torch's or ONNX Runtime's C++ code, which can abort (SIGABRT) instead.
    A program that handles the signals itself (the server's event loop) replaces the handler meanwhile.
    """
    global _announce
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if _critical:
            _pending.append(signum)
        else:
            _exit_now(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    _announce = announce
    try:
        yield
    finally:
        _announce = None
        for sig, old in previous.items():
            signal.signal(sig, old)


def _exit_now(signum: int) -> None:
    for path, made in list(_active.items()):
        _remove(path, made)
    if _announce is not None:
        with suppress(Exception):
            _announce(signum)
    for stream in (sys.stdout, sys.stderr):
        with suppress(Exception):
            stream.flush()
    os._exit(128 + signum)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp/mkdtemp create 0600/0700 entries; finished files get the usual permissions instead.
FILE_MODE = 0o666 & ~_current_umask()
DIR_MODE = 0o777 & ~_current_umask()


def write_target(path: str | os.PathLike[str], what: str = "the output") -> str:
    """The file a write to ``path`` lands in: ``path``, or where a symbolic link at it points (a dangling one
    too). A link loop is a one-line ``ConfigError`` naming ``what``: a shell redirection fails there as well."""
    if not os.path.islink(path):
        return os.path.abspath(path)
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError(f"{what} '{path}' is a loop of symbolic links; give a file path") from None
    return os.path.realpath(path)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    A symbolic link is written through (its target is replaced, the link stays); a device, pipe or socket at
    ``path`` is a one-line ``ConfigError``: the rename would replace the node itself with a file."""
    target = Path(write_target(path))
    if target.exists() and not (target.is_file() or target.is_dir()):
        raise ConfigError(f"'{path}' is a device, pipe or socket, not a file; give a file path")
    with staging(target.parent, target.name, "tmp") as tmp_path:
        yield tmp_path
        os.chmod(tmp_path, FILE_MODE)
        os.replace(tmp_path, target)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Atomically write ``data`` to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_with(path: str | os.PathLike[str], writer: Callable[[Path], None]) -> Path:
    """Atomically produce ``path`` with ``writer(tmp_path)`` (for libraries that write files themselves)."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
