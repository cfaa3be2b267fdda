"""Crash-safe writes and friendly reads of the JSON artefacts.

Every artefact is written under a temporary name in the same folder and renamed into place, so a
process killed at any moment leaves either the old file, the new file, or a stray ``.tmp`` file
that no reader mistakes for a result.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Union

from .paths import TranssegError

PathLike = Union[str, Path]
TEMPORARY_MARKER = ".tmp-"


def temporary_sibling(path: PathLike) -> Path:
    """A unique temporary name beside ``path`` that keeps its full suffix (``.nii.gz`` stays last)."""
    path = Path(path)
    return path.with_name(f"{TEMPORARY_MARKER}{uuid.uuid4().hex[:8]}-{path.name}")


def fsync_file(path: PathLike) -> None:
    """Flush a written file's data to the disk (not just to the page cache)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_directory(folder: PathLike) -> None:
    """Make a rename inside ``folder`` durable; a no-op where directories cannot be opened (Windows)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:            # some file systems refuse fsync on a directory; the rename is then as good as it gets
        pass
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def atomic_path(path: PathLike, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to ``path``, on failure removed.

    ``durable``: fsync the file before the rename and the folder after it, so that a node crash
    (power, kernel) right after the rename cannot leave an empty file under the final name; used
    for checkpoints, whose loss costs hours, not for the many small artefacts.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_sibling(path)
    try:
        yield temporary
        if durable:
            fsync_file(temporary)
        os.replace(temporary, path)
        if durable:
            fsync_directory(path.parent)
    finally:
        if temporary.exists():
            temporary.unlink()


def _to_json_compatible(value: Any) -> Any:
    """numpy scalars and arrays, tuples and paths become plain JSON types."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _to_json_compatible(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json_compatible(v) for v in value]
    return value


def save_json(data: Any, path: PathLike, indent: int = 2) -> None:
    with atomic_path(path) as temporary:
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(_to_json_compatible(data), handle, indent=indent, allow_nan=False)
            handle.write("\n")


def load_json(path: PathLike) -> Any:
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise TranssegError(f"{path}: file not found.") from None
    except json.JSONDecodeError as error:
        raise TranssegError(f"{path}: not valid JSON ({error}).") from None


def remove_stale_temporaries(folder: PathLike) -> int:
    """Delete temporaries a killed run left behind; returns how many were removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    stale = [p for p in folder.iterdir() if p.name.startswith(TEMPORARY_MARKER)]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def _lock_holder(path: Path) -> dict:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return record if isinstance(record, dict) else {}
    except (OSError, ValueError):
        return {}      # being written this instant, or left empty by a run killed right after creating it


def _holder_alive(record: dict, path: Path) -> bool:
    """Is the process that wrote the lock still running? Another host's process is assumed to be."""
    if record.get("host") not in (None, socket.gethostname()):
        return True
    if not isinstance(record.get("pid"), int):
        return time.time() - path.stat().st_mtime < 10   # an unreadable lock: fresh means being written
    try:
        os.kill(record["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:       # alive, another user's
        return True
    return True


def _break_stale_lock(path: Path, stale: dict) -> None:
    """Remove a dead run's lock, unless another run replaced it meanwhile (moved aside first, then compared)."""
    aside = temporary_sibling(path)
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return                      # another run broke it first; it now competes for the lock like us
    if _lock_holder(aside) == stale:
        aside.unlink()
    else:                           # a live lock taken just now: put it back
        os.replace(aside, path)


@contextlib.contextmanager
def exclusive_lock(path: PathLike, what: str) -> Iterator[None]:
    """Hold ``path`` (created with O_EXCL, holding our PID and host) while the block runs.

    A lock whose process is alive is refused with a message naming it; one whose process has died
    (killed, machine rebooted) is taken over, so a killed run never blocks the next one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "token": uuid.uuid4().hex,
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)}
    for _ in range(5):
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _lock_holder(path)
            try:
                alive = _holder_alive(holder, path)
            except FileNotFoundError:   # released meanwhile
                continue
            if alive:
                who = (f"process {holder.get('pid', '?')} on {holder.get('host', '?')} since "
                       f"{holder.get('started', '?')}: {holder.get('command', '?')}")
                raise TranssegError(f"{path}: another run is {what} here ({who}). "
                                    f"Wait for it to finish; if no such run exists, delete the lock file.") from None
            _break_stale_lock(path, holder)
            continue
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(record, handle)
        break
    else:
        raise TranssegError(f"{path}: could not take the lock; several runs are starting at once. Try again.")
    try:
        yield
    finally:
        if _lock_holder(path).get("token") == record["token"]:
            path.unlink(missing_ok=True)
