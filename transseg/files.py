"""Crash-safe writes and friendly reads of the JSON artefacts.

Every artefact is written under a temporary name in the same folder and renamed into place, so a
process killed at any moment leaves either the old file, the new file, or a stray ``.tmp`` file
that no reader mistakes for a result.
"""
from __future__ import annotations

import contextlib
import json
import os
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


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to ``path``, on failure removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_sibling(path)
    try:
        yield temporary
        os.replace(temporary, path)
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
