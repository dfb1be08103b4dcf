"""Plumbing shared by every stage: reading params.yaml, errors, progress lines and atomic writes.

Every stage module has a ``main()`` wrapped by :func:`run_stage`, which turns a
:class:`PipelineError` into one readable message on stderr and exit status 2
instead of a traceback, and Ctrl-C into one line and exit status 130.  Outputs
are written through :func:`atomic_dir` or :func:`write_atomic`, so a stage that
fails or is interrupted leaves no half-written file behind.

Their temporaries are hidden siblings of the output, ``.<name>.tmp-<host>-<pid>-*``
(and ``.<name>.old-<host>-<pid>-*`` for the output being replaced), removed on
any exception.  Only a hard kill (``SIGKILL``, a power cut) leaves them behind;
the name says which process of which machine made them, so the next write of
the same output removes those of processes of this machine that are no longer
running (:func:`remove_stale_temporaries`).  Scratch folders under the system's
temporary folder follow the same rule (:func:`private_temporary_directory`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

PARAMS_FILE = Path("params.yaml")


class PipelineError(Exception):
    """A problem with the input or the parameters that the user can fix.

    The message must say which file or parameter is wrong, the offending value,
    and what to do about it.
    """


def parse_yaml(text: str, where: str) -> Any:
    """YAML text read as DVC reads it: YAML 1.2 (ruamel.yaml's safe loader, which DVC itself uses).

    So every value DVC writes back with ``dvc exp run -S`` (``1e-05``) reads as
    the number DVC meant, and ``017`` is 17 here as in ``dvc params diff``
    (PyYAML, YAML 1.1, reads the first as a string and the second as octal 15).
    A duplicate key or a syntax error is a :class:`PipelineError` naming the
    line, never a traceback or a silently kept last value.
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.constructor import DuplicateKeyError
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    try:
        return YAML(typ="safe", pure=True).load(text)
    except DuplicateKeyError as error:
        mark = error.problem_mark
        raise PipelineError(f"{where}, line {mark.line + 1}: {error.problem.strip()}; keep one of the two "
                            "and delete the other.") from None
    except MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise PipelineError(f"{where}{line}: not valid YAML ({error.problem or error.context}); fix the "
                            "indentation or quoting there (or restore it with git checkout).") from None
    except YAMLError as error:
        raise PipelineError(f"{where}: not valid YAML ({error}).") from None


def load_params(path: Path | str = PARAMS_FILE) -> dict[str, Any]:
    """Read ``params.yaml`` (or ``path``) as DVC reads it (:func:`parse_yaml`) and return it as a dict."""
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path} not found; run the stage from the repository root.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise PipelineError(f"{path} is not UTF-8 text (byte {error.start}); save it as UTF-8.") from None
    params = parse_yaml(text, str(path)) or {}
    if not isinstance(params, dict):
        raise PipelineError(f"{path} must hold a mapping at top level, found {type(params).__name__}.")
    return params


def check_choice(name: str, value: Any, allowed: list[str] | tuple[str, ...] | dict) -> None:
    """Fail unless ``value`` is one of ``allowed``, listing the allowed values."""
    if value not in allowed:
        raise PipelineError(
            f"{name} = {value!r} is not known; use one of: {', '.join(map(str, allowed))} "
            f"(edit params.yaml or pass -S {name.split(' ')[0]}=...)."
        )


def log(stage: str, message: str) -> None:
    """Print one progress line, prefixed by the stage, flushed at once."""
    print(f"[{stage}] {message}", flush=True)


class Stopwatch:
    """Seconds since creation, for progress lines."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __str__(self) -> str:
        return f"{time.perf_counter() - self.start:.1f} s"


class Progress:
    """Units of work done out of a known total, with the time left at the pace so far.

    ``done(n)`` counts ``n`` more units; :meth:`__str__` reads
    ``17/75 epochs, 0:41 so far, at most 2:20 left`` (``at most``: where
    ``total`` is an upper bound, as epochs are under early stopping; units
    skipped, such as the epochs early stopping saved, are counted with
    ``skip``).  The pace is that of the units actually run, so the first
    (tracing, compiling) makes the early estimates high.
    """

    def __init__(self, total: int, unit: str, *, upper_bound: bool = False) -> None:
        self.total, self.unit, self.upper_bound = total, unit, upper_bound
        self.run = self.skipped = 0
        self.start = self.last_shown = time.perf_counter()

    def due(self, every_s: float = 10.0) -> bool:
        """Whether ``every_s`` seconds have passed since the last time this said yes (for loops over many items)."""
        now = time.perf_counter()
        if now - self.last_shown < every_s:
            return False
        self.last_shown = now
        return True

    def done(self, count: int = 1) -> None:
        self.run += count

    def skip(self, count: int) -> None:
        self.skipped += count

    def seconds_left(self) -> float | None:
        if not self.run:
            return None
        pace = (time.perf_counter() - self.start) / self.run
        return pace * max(0, self.total - self.run - self.skipped)

    def __str__(self) -> str:
        elapsed = time.perf_counter() - self.start
        shown = f"{self.run + self.skipped}/{self.total} {self.unit}, {clock_time(elapsed)} so far"
        left = self.seconds_left()
        if left is not None:
            shown += f", {'at most ' if self.upper_bound else ''}{clock_time(left)} left"
        return shown


def clock_time(seconds: float) -> str:
    """``h:mm:ss`` (or ``m:ss`` under an hour), for progress lines."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _usual_mode(path: Path, directory: bool) -> None:
    """Give ``path`` the permissions a plain ``open``/``mkdir`` would have.

    ``tempfile`` creates private (0600/0700) entries, which would otherwise
    end up as the pipeline's outputs.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if directory else 0o666) & ~umask)


def _host() -> str:
    """This machine's name as temporaries carry it: characters other than letters, digits, ``.`` and ``-`` become
    ``_``."""
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "_"


def _owner_tag() -> str:
    """``<host>-<pid>-``: what a temporary's name says about its maker, before ``tempfile``'s random part."""
    return f"{_host()}-{os.getpid()}-"


# <host>-<pid>-<random> (tempfile's random part: lowercase letters, digits and _, never a dash).
_OWNER = re.compile(r"(?P<host>[A-Za-z0-9._-]+)-(?P<pid>[0-9]+)-[a-z0-9_]+")


def _process_gone(pid: int) -> bool:
    """Whether no process ``pid`` runs on this machine (a process of another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False


def _remove_stale(folder: Path, prefixes: tuple[str, ...], *, suffix: str, use: str,
                  mine_only: bool = False) -> list[Path]:
    """Remove the entries of ``folder`` named ``<prefix><host>-<pid>-<random><suffix>`` whose process, of this
    host, is no longer running, logging each; log those kept because their maker cannot be checked.

    ``use`` completes "delete it if no run is ..." in those lines.  ``mine_only``:
    consider this user's entries only (in a folder shared with others, as ``/tmp``).
    """
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    host, removed = _host(), []
    for entry in entries:
        prefix = next((p for p in prefixes if entry.name.startswith(p)), None)
        try:
            if prefix is None or (mine_only and entry.stat(follow_symlinks=False).st_uid != os.getuid()):
                continue
            path, size = Path(entry.path), f"{tree_bytes(Path(entry.path)) / 1e6:.1f} MB"
        except OSError:         # gone meanwhile: another run cleaned it up
            continue
        rest = entry.name[len(prefix):]
        owner = _OWNER.fullmatch(rest[:len(rest) - len(suffix)] if suffix and rest.endswith(suffix) else rest)
        if owner is None:
            log("cleanup", f"kept {path} ({size}): its name does not say which process made it (an older version "
                           f"of this code did); delete it if no run is {use}")
        elif owner["host"] != host:
            log("cleanup", f"kept {path} ({size}): process {owner['pid']} on {owner['host']} made it, which cannot "
                           f"be checked from {host}; delete it if no run there is {use}")
        elif _process_gone(int(owner["pid"])) and _remove(path, size, owner["pid"]):
            removed.append(path)
    return removed


def _remove(path: Path, size: str, pid: str) -> bool:
    """Remove the file or folder ``path`` that process ``pid``, gone, left; log it (or why not); whether it went."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:       # another run removed it first
        return False
    except OSError as error:
        log("cleanup", f"could not remove {path} ({size}), left by process {pid} of this host, which is no longer "
                       f"running: {error.strerror or error}; delete it by hand")
        return False
    log("cleanup", f"removed {path} ({size}), left by process {pid} of this host, which is no longer running "
                   "(killed while writing)")
    return True


def remove_stale_temporaries(path: Path | str) -> list[Path]:
    """Remove the temporaries of :func:`atomic_dir` and :func:`write_atomic` that a hard kill left beside ``path``.

    They are ``path``'s siblings ``.<name>.tmp-<host>-<pid>-*`` and
    ``.<name>.old-<host>-<pid>-*``.  Only those made by a process of this host
    that is no longer running are removed, one line logged for each (its path
    and size); those of a live process (a run writing ``path`` right now) are
    kept, and so are those of another host (its processes cannot be checked
    from here) or with no owner in their name, with a line saying so.  Returns
    what was removed.
    """
    path = Path(path)
    prefixes = tuple(f".{path.name}.{tag}-" for tag in ("tmp", "old"))
    return _remove_stale(path.parent, prefixes, suffix="".join(path.suffixes), use=f"writing {path}")


def _fresh_sibling(path: Path, tag: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.{tag}-{_owner_tag()}", dir=path.parent))


@contextlib.contextmanager
def private_temporary_directory(prefix: str) -> Iterator[Path]:
    """A new folder, private to this user, under the system's temporary folder, removed after the block.

    As :class:`tempfile.TemporaryDirectory`, but named ``<prefix><host>-<pid>-*``,
    so that before making it the folders of the same ``prefix`` that a hard kill
    left behind (this user's, made by a process of this host that is no longer
    running) are removed, as :func:`remove_stale_temporaries` does for outputs.
    """
    parent = Path(tempfile.gettempdir())
    _remove_stale(parent, (prefix,), suffix="", use="using it", mine_only=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{prefix}{_owner_tag()}", dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _fsync(path: Path) -> None:
    """Flush ``path`` (a file, or a directory's entries) to the disk, so a power cut cannot undo it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            _fsync(Path(folder) / name)
        _fsync(Path(folder))


@contextlib.contextmanager
def atomic_dir(path: Path | str) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` only if the block succeeds.

    On any exception the temporary directory is removed and ``path`` is left as
    it was, so a failed stage never leaves a half-filled output directory.  The
    temporaries a hard kill left for ``path`` are removed first
    (:func:`remove_stale_temporaries`).
    """
    path = Path(path)
    remove_stale_temporaries(path)
    tmp = _fresh_sibling(path, "tmp")
    try:
        yield tmp
    except BaseException as error:
        problem = storage_error(error, path, tree_bytes(tmp))
        shutil.rmtree(tmp, ignore_errors=True)
        if problem:
            raise problem from error
        raise
    _usual_mode(tmp, directory=True)
    _fsync_tree(tmp)
    old = None
    if path.exists():
        old = _fresh_sibling(path, "old")
        os.replace(path, old / path.name)
    os.replace(tmp, path)
    _fsync(path.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_atomic(path: Path | str, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` and move the result onto ``path`` in one step.

    ``tmp_path`` ends in all of ``path``'s suffixes (``.weights.h5``, not just
    ``.h5``), for writers that check the name, as Keras' ``save_weights`` does,
    and is named ``.<name>.tmp-<host>-<pid>-*``, which git and DVC ignore should a
    hard kill leave it behind, and which the next write of ``path`` removes
    (:func:`remove_stale_temporaries`).  The data reach the disk (``fsync``)
    before the rename, and the rename before this returns: what is written
    after it (a "finished" marker) can never survive a power cut that the data
    did not.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-{_owner_tag()}", suffix="".join(path.suffixes),
                               dir=path.parent)
    os.close(fd)
    try:
        writer(Path(tmp))
        _usual_mode(Path(tmp), directory=False)
        _fsync(Path(tmp))
        os.replace(tmp, path)
        _fsync(path.parent)
    except BaseException as error:
        problem = storage_error(error, path, tree_bytes(Path(tmp)))
        Path(tmp).unlink(missing_ok=True)
        if problem:
            raise problem from error
        raise


def json_ready(data: Any) -> Any:
    """``data`` with NaN and infinities as null (strict JSON has no NaN) and numpy scalars as Python ones."""
    if isinstance(data, dict):
        return {key: json_ready(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [json_ready(value) for value in data]
    if hasattr(data, "item") and callable(data.item) and getattr(data, "ndim", None) == 0:
        data = data.item()
    if isinstance(data, float) and not math.isfinite(data):
        return None
    return data


def write_json(path: Path | str, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically; undefined figures (NaN) become null."""
    text = json.dumps(json_ready(data), indent=2, sort_keys=False, allow_nan=False) + "\n"
    write_atomic(path, lambda tmp: tmp.write_text(text))


def read_json(path: Path | str) -> Any:
    """Read a JSON file, failing with the file's name if it is missing, truncated or not JSON."""
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path} not found; run the stage that makes it first (dvc repro).")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        decoded = isinstance(error, json.JSONDecodeError)
        where = f" (line {error.lineno}, column {error.colno}: {error.msg})" if decoded else ""
        raise PipelineError(f"{path} is not valid JSON{where}, truncated or overwritten; delete it and run "
                            "dvc repro, which writes it again.") from None


# Errors of the file system a user can fix, and how.
STORAGE_ERRORS = {
    errno.ENOSPC: ("the disk is full", "free space there"),
    errno.EDQUOT: ("the disk quota is used up", "free space there or raise the quota"),
    errno.EROFS: ("the file system is read-only", "remount it writable, or run from a copy of the project on a "
                                                   "writable disk"),
    errno.EACCES: ("permission denied", "make it readable and writable for this user (chmod, chown)"),
    errno.EPERM: ("operation not permitted", "make it readable and writable for this user (chmod, chown)"),
}


def storage_error(error: BaseException, path: Path | None = None, written_bytes: int = 0) -> PipelineError | None:
    """A :class:`PipelineError` naming the path (the error's own file, else the output ``path`` being written),
    the reason, the free space, what was written before the failure (the least the output needs) and the fix;
    None if not such an error."""
    if not isinstance(error, OSError) or error.errno not in STORAGE_ERRORS:
        return None
    reason, fix = STORAGE_ERRORS[error.errno]
    failed = Path(error.filename) if error.filename else None
    in_temporary = failed is not None and path is not None and any(
        part.startswith(f".{path.name}.tmp-") for part in failed.parts)
    if failed is not None and not in_temporary:     # another file failed: name it, not the output
        path, written_bytes = failed, 0
    elif path is None:
        written_bytes = 0
    existing = next((p for p in (path, *path.parents) if p.exists()), Path.cwd()) if path else Path.cwd()
    free = shutil.disk_usage(existing).free
    need = f", after {written_bytes / 1e6:.1f} MB of it were written: it needs more" if written_bytes else ""
    return PipelineError(f"cannot read or write {path or 'an output of this stage'}: {reason} ({free / 1e9:.2f} GB "
                         f"free on its file system{need}); {fix}, then run the stage again. Outputs are renamed into "
                         "place only when complete, so none was left half-written.")


def tree_bytes(path: Path) -> int:
    """Bytes of the files below ``path`` (of ``path`` itself, if a file)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def free_space_problem(folder: Path | str, needed_bytes: float) -> str | None:
    """Why ``needed_bytes`` will not fit below ``folder`` (None when they will)."""
    free = shutil.disk_usage(folder).free
    if free >= needed_bytes:
        return None
    return f"{needed_bytes / 1e9:.2f} GB are needed in {folder} and {free / 1e9:.2f} GB are free"


@contextlib.contextmanager
def exclusive_lock(path: Path, what: str) -> Iterator[None]:
    """Hold an advisory lock on ``path`` for the block; refuse at once, naming the holder, if another process has it.

    ``flock`` locks go with the process, so a killed run leaves nothing to
    delete; they hold between processes of one machine (on NFS, only where
    the server supports them).
    """
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise PipelineError(f"{what} is already running ({holder}; lock {path}); wait for it to end or stop it. "
                                "Two runs on one output would overwrite each other's folds.") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)


# The line an interrupted run ends with (exit status 130, as a shell reports Ctrl-C).
INTERRUPTED = ("interrupted: outputs are renamed into place only when complete, so none was left half-written "
               "(those finished before the interrupt stay); run it again to redo the rest.")


@contextlib.contextmanager
def _signals_recorded() -> Iterator[list[int]]:
    """For the block: Ctrl-C (SIGINT) raises :class:`KeyboardInterrupt` and is recorded in the list yielded, SIGTERM
    (a killed ``dvc repro``) becomes ``SystemExit``; the handlers before are restored after it."""
    received: list[int] = []

    def interrupt(signum: int, frame: Any) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    previous = {signal.SIGINT: signal.signal(signal.SIGINT, interrupt),
                signal.SIGTERM: signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_stage(main: Callable[[list[str]], None]) -> None:
    """Run a stage's ``main(argv)``; on :class:`PipelineError`, or a full, read-only or forbidden disk
    (:func:`storage_error`), print the message and exit 2.

    Ctrl-C ends the run with the one line :data:`INTERRUPTED` on stderr and exit
    status 130, whatever exception the interrupt became while it unwound (a
    library that catches :class:`KeyboardInterrupt` may raise another).  SIGTERM
    (a killed ``dvc repro``) becomes ``SystemExit``.  Either way the exception
    passes through :func:`atomic_dir` and :func:`write_atomic`, which remove
    their temporaries.  Call it from the main thread.
    """
    with _signals_recorded() as interrupted:
        try:
            main(sys.argv[1:])
        except BaseException as error:
            if interrupted:
                signal.signal(signal.SIGINT, signal.SIG_IGN)        # a second Ctrl-C cannot cut the line short
                print(INTERRUPTED, file=sys.stderr, flush=True)
                sys.exit(130)
            problem = error if isinstance(error, PipelineError) else storage_error(error)
            if problem is None:
                raise
            print(f"error: {problem}", file=sys.stderr, flush=True)
            sys.exit(2)


def parse_args(argv: list[str], names: list[str], usage: str) -> list[str]:
    """Check that ``argv`` holds exactly the positional arguments ``names``."""
    if len(argv) != len(names):
        raise PipelineError(f"usage: {usage} (got {len(argv)} arguments: {argv}).")
    return list(argv)
