"""Every file the package writes, in one place: atomic writes, one-line write errors, the
training history file, and the lock that makes a run directory belong to one process.

A write goes to a temporary file in the destination directory, is flushed and fsynced, then
moved over its destination with :func:`os.replace`: a reader (or a crash, or a full disk) sees
the old file or the new one, never half of one. An :class:`OSError` while writing (no space,
read-only, quota) is raised as :class:`~pyro_dvae.errors.DVAEWriteError`, one line naming what
could not be written and where; the temporary file is removed and the destination is untouched.

:func:`run_lock` holds an OS lock (``fcntl.flock``) on ``RUN_DIR/.pyro-dvae.lock`` while a
process writes into a run directory; the operating system releases it when the process ends,
killed or not, so a crash never leaves a directory blocked. The file's content (pid, host,
command) only serves the message a second writer gets.

Example:
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> with run_lock(d):
    ...     _ = write_json(d / "metrics.json", {"steps": 3}, what="metrics")
    >>> json.loads((d / "metrics.json").read_text())
    {'steps': 3}
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..errors import DVAEInputError, DVAEWriteError

if TYPE_CHECKING:
    from ..training.evaluation import RunMetrics

try:  # an OS-level lock: released by the kernel when its process dies
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock (documented)
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "HISTORY_NAME",
    "LOCK_NAME",
    "METRICS_NAME",
    "atomic_write",
    "check_not_locked",
    "history_rows",
    "lock_holder",
    "lock_owner",
    "read_history",
    "read_metrics",
    "run_lock",
    "save_figure",
    "write_history",
    "write_json",
    "write_text",
]

#: the lock file of a run directory (its content: who holds it)
LOCK_NAME = ".pyro-dvae.lock"
#: the per-step training history of a run directory (JSON lines)
HISTORY_NAME = "history.jsonl"
#: the summary of a finished training run (:class:`~pyro_dvae.training.RunMetrics`, JSON)
METRICS_NAME = "metrics.json"


# --------------------------------------------------------------------------- atomic writes --
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: files are created with the permissions of an ordinary ``open(path, "w")``, not ``mkstemp``'s
_FILE_MODE = 0o666 & ~_umask()


def _reason(e: OSError) -> str:
    return e.strerror or type(e).__name__


def atomic_write(
    path: str | os.PathLike, write: Callable[[IO[bytes]], Any], *, what: str = "file"
) -> Path:
    """Write ``path`` atomically with ``write(binary_file)``; returns ``path``.

    An :class:`OSError` (in ``write``, the fsync or the rename) removes the temporary file,
    leaves ``path`` as it was and raises :class:`~pyro_dvae.errors.DVAEWriteError` naming
    ``what`` and ``path``.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "a.txt"
        >>> atomic_write(p, lambda f: f.write(b"hi"), what="note").read_bytes()
        b'hi'
    """
    path = Path(path)
    tmp_name = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with contextlib.suppress(OSError):
            os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except OSError as e:
        _unlink(tmp_name)
        raise _replace_error(path, what, e) from None
    except BaseException:
        _unlink(tmp_name)
        raise
    _fsync_dir(path.parent)
    return path


def _replace_error(path: Path, what: str, error: OSError) -> DVAEWriteError:
    """The one-line error of a failed write-then-rename of ``path``."""
    return DVAEWriteError(
        f"could not write {what} {path} ({_reason(error)}); the previous file, if any, is kept",
        path=path,
        reason=_reason(error),
        what=what,
    )


def _unlink(name: str | None) -> None:
    if name is not None:
        with contextlib.suppress(OSError):
            os.unlink(name)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. not supported on this platform
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text(path: str | os.PathLike, text: str, *, what: str = "file") -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically.

    Example:
        >>> import tempfile
        >>> write_text(Path(tempfile.mkdtemp()) / "a.md", "# a\\n").read_text()
        '# a\\n'
    """
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")), what=what)


def write_json(
    path: str | os.PathLike, obj: Any, *, what: str = "JSON file", indent: int = 2, **kw: Any
) -> Path:
    """Write ``obj`` as indented JSON (and a final newline) to ``path`` atomically.

    Example:
        >>> import tempfile
        >>> write_json(Path(tempfile.mkdtemp()) / "m.json", {"a": 1}).read_text()
        '{\\n  "a": 1\\n}\\n'
    """
    return write_text(path, json.dumps(obj, indent=indent, **kw) + "\n", what=what)


def save_figure(fig: Any, path: str | os.PathLike, **savefig_kw: Any) -> Path:
    """Save a matplotlib figure as a PNG at ``path`` atomically (rendered in memory first)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", **savefig_kw)
    return atomic_write(path, lambda f: f.write(buf.getbuffer()), what="figure")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, what: str = "file") -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that needs a file name (netCDF); moved over
    ``path`` when the block ends without error, removed otherwise (an :class:`OSError` becomes
    :class:`~pyro_dvae.errors.DVAEWriteError`).

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "a.bin"
        >>> with atomic_path(p) as tmp:
        ...     _ = tmp.write_bytes(b"x")
        >>> p.read_bytes()
        b'x'
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        _unlink(str(tmp))
        raise _replace_error(path, what, e) from None
    except BaseException:
        _unlink(str(tmp))
        raise
    _fsync_dir(path.parent)


# --------------------------------------------------------------------------- history --------
def history_rows(history: Mapping[str, list]) -> list[dict[str, Any]]:
    """The rows of ``history.jsonl``: one per step (``step``, ``loss``, ``tau``), with the
    validation ``valid_nelbo`` on the step it was measured at; non-finite numbers are ``null``.

    Example:
        >>> rows = history_rows({"loss": [3.0, 2.0], "tau": [1.0, 1.0], "valid_step": [2],
        ...                      "valid_nelbo": [2.5]})
        >>> rows[1]
        {'step': 2, 'loss': 2.0, 'tau': 1.0, 'valid_nelbo': 2.5}
    """
    per_step = [k for k in history if not k.startswith("valid_")]
    n = max((len(history[k]) for k in per_step), default=0)
    rows = [
        {"step": i + 1, **{k: _finite(history[k][i]) for k in per_step if i < len(history[k])}}
        for i in range(n)
    ]
    extra = []
    for s, v in zip(history.get("valid_step", []), history.get("valid_nelbo", [])):
        if 1 <= s <= n and "valid_nelbo" not in rows[s - 1]:
            rows[s - 1]["valid_nelbo"] = _finite(v)
        else:  # not on a step of the loss history: a row of its own
            extra.append({"step": int(s), "valid_nelbo": _finite(v)})
    return rows + extra


def _finite(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def write_history(path: str | os.PathLike, history: Mapping[str, list]) -> Path:
    """Write a run's training history as JSON lines (:func:`history_rows`), atomically."""
    text = "".join(json.dumps(row) + "\n" for row in history_rows(history))
    return write_text(path, text, what="training history")


def _from_rows(rows: Iterable[Mapping[str, Any]]) -> dict[str, list]:
    history: dict[str, list] = {"loss": [], "tau": [], "valid_step": [], "valid_nelbo": []}
    for row in rows:
        for key, value in row.items():
            if key not in ("step", "valid_nelbo"):
                history.setdefault(key, []).append(value)
        if "valid_nelbo" in row:
            history["valid_step"].append(int(row["step"]))
            history["valid_nelbo"].append(row["valid_nelbo"])
    return history


def read_history(run_dir: str | os.PathLike, metrics: Mapping[str, Any] | None = None) -> dict:
    """The training history of a run directory: from ``history.jsonl``, or from the
    ``"history"`` of ``metrics`` (its ``metrics.json``: runs written before the history had a
    file of its own); ``{}`` when there is none.

    Example:
        >>> read_history("/nonexistent", {"history": {"loss": [1.0]}})
        {'loss': [1.0]}
    """
    file = Path(run_dir) / HISTORY_NAME
    if file.is_file():
        try:
            lines = file.read_text().splitlines()
            return _from_rows(json.loads(line) for line in lines if line.strip())
        except (OSError, UnicodeDecodeError, ValueError, TypeError, AttributeError) as e:
            raise DVAEInputError(
                f"{file} is not a readable training history ({type(e).__name__}); re-run "
                "training to rewrite it"
            ) from None
    old = (metrics or {}).get("history")
    return dict(old) if isinstance(old, dict) else {}


def read_metrics(run_dir: str | os.PathLike) -> RunMetrics:
    """The :class:`~pyro_dvae.training.RunMetrics` of a run directory, read from its
    ``metrics.json``; ``{}`` when there is none (training did not finish).

    Example:
        >>> read_metrics("/nonexistent")
        {}
    """
    file = Path(run_dir) / METRICS_NAME
    if not file.is_file():
        return {}  # type: ignore[typeddict-item]
    try:
        metrics = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DVAEInputError(
            f"{file} is not readable JSON ({type(e).__name__}); re-run training to rewrite it"
        ) from None
    if not isinstance(metrics, dict):
        raise DVAEInputError(f"{file} does not hold a JSON object; re-run training to rewrite it")
    return metrics


# --------------------------------------------------------------------------- run lock -------
#: locks this process holds: lock file -> [open file, depth] (a lock is re-entrant per process)
_HELD: dict[Path, list] = {}


def _describe(command: str | None) -> str:
    cmd = command or " ".join(["pyro-dvae", *sys.argv[1:]])
    return json.dumps(
        {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": cmd,
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
    )


def lock_holder(directory: str | os.PathLike) -> str:
    """Who holds (or last held) the lock of ``directory``, as ``pid N on HOST (COMMAND)``."""
    try:
        info = json.loads((Path(directory) / LOCK_NAME).read_text())
        return f"pid {info['pid']} on {info['host']} ({info['command']}, since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _in_use(directory: Path) -> DVAEInputError:
    return DVAEInputError(
        f"run directory {directory} is in use by {lock_holder(directory)}; wait for it to "
        "finish or choose another output directory"
    )


def check_not_locked(directory: str | os.PathLike) -> None:
    """Refuse ``directory`` when another process holds its lock (a live run writes there).

    Example:
        >>> check_not_locked("/nonexistent/run")
    """
    directory = Path(directory)
    file = directory / LOCK_NAME
    if fcntl is None or file.resolve() in _HELD or not file.is_file():
        return
    try:
        fd = os.open(file, os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _in_use(directory) from None
    except OSError:
        return
    finally:
        os.close(fd)


#: files that make a directory a run (or comparison) directory, whose writers take its lock
_RUN_MARKERS = (LOCK_NAME, "checkpoint.pt", METRICS_NAME, "results.json")


@contextlib.contextmanager
def lock_owner(directory: str | os.PathLike, levels: int = 2) -> Iterator[Path | None]:
    """Hold the lock of the run directory that ``directory`` (an output directory, existing
    or not) lies in, if any: ``directory`` itself or one of its ``levels - 1`` parents holding
    a run's files. Used by the writers that add to a run (plots, exports).

    Example:
        >>> with lock_owner("/nonexistent/run/plots") as owner:
        ...     print(owner)
        None
    """
    directory = Path(directory)
    for candidate in [directory, *directory.parents][:levels]:
        if candidate.is_dir() and any((candidate / m).exists() for m in _RUN_MARKERS):
            with run_lock(candidate) as held:
                yield held
            return
    yield None


@contextlib.contextmanager
def run_lock(
    directory: str | os.PathLike, *, command: str | None = None, create: bool = False
) -> Iterator[Path]:
    """Hold the lock of run directory ``directory`` for the block (re-entrant in a process).

    A second process asking for it gets :class:`~pyro_dvae.errors.DVAEInputError` at once,
    naming the directory and the holder. With ``create``, a missing directory is made first,
    and removed again at the end if the block left nothing in it but the lock file.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp()) / "run"
        >>> with run_lock(d, create=True):
        ...     (d / LOCK_NAME).is_file()
        True
        >>> d.exists()
        False
    """
    directory = Path(directory)
    made = False
    if create and not directory.exists():
        try:
            directory.mkdir(parents=True)
            made = True
        except FileExistsError:
            pass
        except OSError as e:
            raise DVAEWriteError(
                f"could not create output directory {directory} ({_reason(e)}); choose another "
                "output directory",
                path=directory,
                reason=_reason(e),
            ) from None
    file = (directory / LOCK_NAME).resolve()
    if fcntl is None or file in _HELD:
        if file in _HELD:
            _HELD[file][1] += 1
        try:
            yield directory
        finally:
            if file in _HELD:
                _HELD[file][1] -= 1
        return
    f = _acquire(directory, file, command)
    _HELD[file] = [f, 1]
    try:
        yield directory
    finally:
        _HELD.pop(file, None)
        try:
            if made and [p.name for p in directory.iterdir()] == [LOCK_NAME]:
                file.unlink()  # still locked: no other process can have taken it meanwhile
                directory.rmdir()
        except OSError:
            pass
        f.close()  # releases the lock


def _acquire(directory: Path, file: Path, command: str | None) -> IO[str]:
    for _ in range(10):  # retried when the file was replaced between open and lock
        try:
            fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            raise DVAEInputError(
                f"run directory {directory} does not exist; create it first"
            ) from None
        except OSError as e:
            raise DVAEWriteError(
                f"could not write the lock file {file} ({_reason(e)}); fix the permissions of "
                f"{directory} or choose another output directory",
                path=file,
                reason=_reason(e),
            ) from None
        f = os.fdopen(fd, "r+")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise _in_use(directory) from None
        try:
            same = os.fstat(f.fileno()).st_ino == os.stat(file).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # removed by its last holder after we opened it
            f.close()
            continue
        try:  # who holds it, for the message of a second writer (the lock is the flock)
            f.truncate(0)
            f.write(_describe(command) + "\n")
            f.flush()
        except OSError:
            pass  # a full disk: the lock holds all the same
        return f
    raise _in_use(directory)  # pragma: no cover
