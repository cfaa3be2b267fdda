"""CASE.npz + CASE.json: one preprocessed case on disk, and cheap windows out of it.

``CASE.npz`` is an ordinary, *uncompressed* numpy archive (``np.load`` reads it) holding
``data`` (C, Z, Y, X) and ``seg`` (Z, Y, X). Uncompressed members are plain byte ranges of the
file, so :func:`open_member` memory-maps one without reading the rest: the loader cuts a window of
K slices and only those pages are read from disk. Each member's ``.npy`` header is padded so that
its array starts on a 64-byte boundary of the file (aligned memory maps). Compression would save
little on float16 noise and would force reading a whole case for every window.

``CASE.json`` holds everything needed to undo the preprocessing and is written last: a case is
complete exactly when its JSON exists and names the current plans hash.
"""
from __future__ import annotations

import struct
import zipfile
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ..files import TEMPORARY_MARKER, atomic_path, load_json, save_json
from ..paths import TranssegError

CASE_FORMAT_VERSION = 1
ALIGNMENT = 64
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")   # zip local file header, 30 bytes
PathLike = Union[str, Path]


def npz_path(folder: PathLike, identifier: str) -> Path:
    return Path(folder) / f"{identifier}.npz"


def json_path(folder: PathLike, identifier: str) -> Path:
    return Path(folder) / f"{identifier}.json"


def _npy_header(array: np.ndarray, data_offset_without_header: int) -> bytes:
    """A version 1.0 .npy header padded so the array data starts ``ALIGNMENT``-aligned in the file."""
    fields = "{'descr': %r, 'fortran_order': False, 'shape': %r, }" % (
        np.lib.format.dtype_to_descr(array.dtype), tuple(int(s) for s in array.shape))
    preamble = 10   # magic (6) + version (2) + header length (2)
    padding = -(data_offset_without_header + preamble + len(fields) + 1) % ALIGNMENT
    text = (fields + " " * padding + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


def write_npz(path: PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write an uncompressed, aligned .npz; the file appears complete under ``path`` or not at all."""
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as handle:
            with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
                for name, array in arrays.items():
                    array = np.ascontiguousarray(array)
                    if array.dtype.hasobject:
                        raise ValueError(f"{name}: object arrays cannot be stored")
                    info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                    info.compress_type = zipfile.ZIP_STORED
                    with archive.open(info, "w", force_zip64=True) as member:
                        member.write(_npy_header(array, handle.tell()))
                        member.write(memoryview(array.reshape(-1)).cast("B"))


def _member_layout(path: Path, name: str) -> tuple[int, tuple[int, ...], np.dtype]:
    """(byte offset of the array data, shape, dtype) of member ``name`` of an uncompressed .npz."""
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(f"{name}.npy")
    except KeyError:
        raise TranssegError(f"{path}: has no array '{name}'.") from None
    except (zipfile.BadZipFile, OSError) as error:
        raise TranssegError(f"{path}: not a readable .npz archive ({error}).") from None
    if info.compress_type != zipfile.ZIP_STORED:
        raise TranssegError(f"{path}: array '{name}' is compressed and cannot be memory-mapped.")
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        header = handle.read(_LOCAL_HEADER.size)
        if len(header) != _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
            raise TranssegError(f"{path}: damaged archive (bad local header for '{name}').")
        name_length, extra_length = struct.unpack("<2H", header[26:30])
        handle.seek(info.header_offset + _LOCAL_HEADER.size + name_length + extra_length)
        try:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        except ValueError as error:
            raise TranssegError(f"{path}: damaged array header for '{name}' ({error}).") from None
        offset = handle.tell()
    if fortran or dtype.hasobject:
        raise TranssegError(f"{path}: array '{name}' is not a plain C-ordered numeric array.")
    end = offset + int(np.prod(shape)) * dtype.itemsize
    if end > path.stat().st_size:
        raise TranssegError(f"{path}: truncated (array '{name}' needs {end} bytes).")
    return offset, tuple(shape), dtype


def open_member(path: PathLike, name: str) -> np.ndarray:
    """Memory-map one array of an uncompressed .npz read-only; nothing is read until it is indexed."""
    path = Path(path)
    offset, shape, dtype = _member_layout(path, name)
    if int(np.prod(shape)) == 0:
        return np.zeros(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="C")


def save_case(folder: PathLike, identifier: str, data: np.ndarray, seg: Optional[np.ndarray],
              properties: dict) -> None:
    """Write CASE.npz, then CASE.json last: the JSON's presence marks a complete case."""
    json_file = json_path(folder, identifier)
    json_file.unlink(missing_ok=True)   # a crash from here on leaves an incomplete (redone) case
    arrays = {"data": data} if seg is None else {"data": data, "seg": seg}
    write_npz(npz_path(folder, identifier), arrays)
    save_json({"format_version": CASE_FORMAT_VERSION, **properties}, json_file)


def list_cases(folder: PathLike) -> list[str]:
    """Identifiers of the complete cases in a folder (those with a CASE.json), sorted; temporaries ignored."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p.name[:-5] for p in folder.iterdir()
                  if p.name.endswith(".json") and not p.name.startswith(TEMPORARY_MARKER))


def load_properties(folder: PathLike, identifier: str) -> dict:
    return load_json(json_path(folder, identifier))


def load_case(folder: PathLike, identifier: str, mmap: bool = True) -> tuple[np.ndarray, Optional[np.ndarray], dict]:
    """(data, seg or None, properties) of one case; memory-mapped unless ``mmap`` is False."""
    properties = load_properties(folder, identifier)
    path = npz_path(folder, identifier)
    if mmap:
        data = open_member(path, "data")
        seg = open_member(path, "seg") if properties.get("has_seg", True) else None
        return data, seg, properties
    with np.load(path, allow_pickle=False) as archive:
        data = archive["data"]
        seg = archive["seg"] if "seg.npy" in archive.zip.namelist() else None
    return data, seg, properties


def case_is_current(folder: PathLike, identifier: str, plans_hash: str) -> bool:
    """True when the case is complete, readable in its headers, and made with these plans."""
    try:
        properties = load_properties(folder, identifier)
        if properties.get("format_version") != CASE_FORMAT_VERSION or properties.get("plans_hash") != plans_hash:
            return False
        path = npz_path(folder, identifier)
        _, data_shape, _ = _member_layout(path, "data")
        if list(data_shape[1:]) != list(properties["shape_after_resampling"]):
            return False
        if properties.get("has_seg", True):
            _, seg_shape, _ = _member_layout(path, "seg")
            return list(seg_shape) == list(properties["shape_after_resampling"])
        return True
    except (TranssegError, KeyError, TypeError, OSError):
        return False


def window_indices(num_slices: int, centre: int, slices: int = 5, stride: int = 1,
                   mode: str = "clamp") -> np.ndarray:
    """Slice indices of the window of ``slices`` slices, ``stride`` apart, centred on ``centre``.

    ``mode='clamp'`` repeats the end slice where the window runs off the volume; ``'constant'``
    returns the raw indices (negative or past the end) for :func:`read_window` to pad.
    """
    indices = centre + (np.arange(slices) - slices // 2) * stride
    return np.clip(indices, 0, num_slices - 1) if mode == "clamp" else indices


def read_window(array: np.ndarray, centre: int, slices: int = 5, stride: int = 1, axis: int = 0,
                mode: str = "clamp", pad_value: Any = 0) -> np.ndarray:
    """The K-slice window around ``centre`` along ``axis`` (1 for data (C,Z,Y,X), 0 for seg).

    Inside the volume it is a strided view (of a memory map: only those slices are ever read);
    at the ends a copy of just the slices involved, clamped to the end slice or padded with
    ``pad_value``.
    """
    count = array.shape[axis]
    if stride < 1 or slices < 1:
        raise ValueError(f"a window needs slices >= 1 and stride >= 1 (got {slices}, {stride})")
    if mode not in ("clamp", "constant"):
        raise ValueError(f"unknown window mode '{mode}' (expected 'clamp' or 'constant')")
    if not 0 <= centre < count:
        raise IndexError(f"centre slice {centre} is outside 0..{count - 1}")
    raw = window_indices(count, centre, slices, stride, mode="constant")
    lead = (slice(None),) * axis
    if raw[0] >= 0 and raw[-1] < count:
        return array[lead + (slice(int(raw[0]), int(raw[-1]) + 1, stride),)]
    array = np.asarray(array)   # copies below are plain in-memory arrays, not memmap look-alikes
    if mode == "clamp":
        return np.take(array, np.clip(raw, 0, count - 1), axis=axis)
    shape = list(array.shape)
    shape[axis] = slices
    window = np.full(shape, pad_value, dtype=array.dtype)
    inside = (raw >= 0) & (raw < count)
    window[lead + (np.flatnonzero(inside),)] = np.take(array, raw[inside], axis=axis)
    return window
