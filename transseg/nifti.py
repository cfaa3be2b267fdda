"""What ITK's NIfTI reader does not tell us: a file cut short, damaged gzip data, NaN/Inf as stored.

ITK zero-fills the voxels missing from a truncated ``.nii``/``.nii.gz`` and reads stored NaN/Inf
as 0, both without an error. So the I/O layer checks NIfTI files itself, in two depths:

- quick (every read): the bytes the header implies (``vox_offset + voxels * bitpix / 8``)
  against what the file holds: its size for ``.nii``; for ``.nii.gz`` the gzip trailer's ISIZE
  field (the uncompressed length mod 2**32; a cut file ends in arbitrary bytes, which match with
  odds of 2**-32). One header read and one seek: 45 us whatever the image size (a 512x512x150
  CT takes 0.2 s to read; benchmarks/nifti_check.py). A trailer that disagrees (a cut file, or
  several gzip members as bgzip writes them) sends the file to the full read, which then decides.
- thorough (``--verify_dataset_integrity``): the whole stream is decompressed, verifying each
  gzip member's CRC-32 and length, and float voxels are counted for NaN/Inf as stored: a second
  decompression, 1.2-1.5x the file's read time again.

Anything that is not a NIfTI-1/2 header is left to ITK, which reports it.
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Optional

import numpy as np

from .paths import TranssegError

CHUNK = 1 << 22
# NIfTI datatype code -> numpy type, for the float types whose stored NaN/Inf ITK hides
FLOAT_TYPES = {16: "f4", 64: "f8"}


@dataclass(frozen=True)
class NiftiLayout:
    """Where the voxels of a NIfTI file are: byte offset, byte count, and the float type if any."""

    data_offset: int
    data_bytes: int
    float_type: Optional[np.dtype]

    @property
    def total_bytes(self) -> int:
        return self.data_offset + self.data_bytes


def parse_header(header: bytes) -> Optional[NiftiLayout]:
    """The layout from the first 540 bytes of a NIfTI-1 or NIfTI-2 file; None when it is neither."""
    for order in "<>":
        if len(header) < 4:
            return None
        size = struct.unpack(order + "i", header[:4])[0]
        if size == 348 and len(header) >= 348:
            dims = struct.unpack(order + "8h", header[40:56])
            datatype, bitpix = struct.unpack(order + "2h", header[70:74])
            offset = int(struct.unpack(order + "f", header[108:112])[0])
            break
        if size == 540 and len(header) >= 540:
            datatype, bitpix = struct.unpack(order + "2h", header[12:16])
            dims = struct.unpack(order + "8q", header[16:80])
            offset = struct.unpack(order + "q", header[168:176])[0]
            break
    else:
        return None
    if not 1 <= dims[0] <= 7 or min(dims[1:dims[0] + 1]) < 1 or bitpix < 8 or bitpix % 8:
        return None   # not something we can size; ITK gives its own error
    voxels = int(np.prod(dims[1:dims[0] + 1], dtype=np.int64))
    float_type = np.dtype(FLOAT_TYPES[datatype]).newbyteorder(order) if datatype in FLOAT_TYPES else None
    return NiftiLayout(max(offset, size + 4), voxels * (bitpix // 8), float_type)


def _open(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _read_layout(path: Path) -> Optional[NiftiLayout]:
    try:
        with _open(path) as handle:
            return parse_header(handle.read(540))
    except (EOFError, OSError, zlib.error):
        return None   # too short or not gzip at all: ITK says what is wrong


def _gzip_trailer_size(path: Path) -> int:
    with open(path, "rb") as handle:
        handle.seek(-4, os.SEEK_END)
        return struct.unpack("<I", handle.read(4))[0]


def _scan(path: Path, layout: NiftiLayout, count_non_finite: bool) -> tuple[int, int]:
    """Read the whole (decompressed) file: (bytes it holds, NaN/Inf voxels stored); raises if damaged."""
    held, bad, carry = 0, 0, b""
    start, end = layout.data_offset, layout.total_bytes
    float_type = layout.float_type if count_non_finite else None
    try:
        with _open(path) as handle:
            while chunk := handle.read1(CHUNK):
                if float_type is not None and held + len(chunk) > start and held < end:
                    part = carry + chunk[max(0, start - held):end - held]
                    usable = len(part) - len(part) % float_type.itemsize
                    values = np.frombuffer(part[:usable], float_type)
                    bad += values.size - int(np.count_nonzero(np.isfinite(values)))
                    carry = part[usable:]
                held += len(chunk)
    except EOFError:
        raise TranssegError(f"{path}: truncated: the gzip stream stops after about {held} of the {end} bytes "
                            f"its NIfTI header implies (ITK would read the missing voxels as zeros). "
                            f"Copy or export the file again.") from None
    except (gzip.BadGzipFile, zlib.error) as error:
        raise TranssegError(f"{path}: damaged gzip data ({error}). Copy or export the file again.") from None
    return held, bad


def check_nifti(path: Path, thorough: bool = False) -> None:
    """Raise a TranssegError naming ``path`` if the NIfTI file is cut short, damaged or (thorough) holds NaN/Inf."""
    layout = _read_layout(path)
    if layout is None:
        return
    if not thorough:
        if path.name.lower().endswith(".gz"):
            if _gzip_trailer_size(path) == layout.total_bytes % 2 ** 32:
                return
        else:
            size = path.stat().st_size
            if size >= layout.total_bytes:
                return
            _truncated(path, size, layout)
    held, bad = _scan(path, layout, count_non_finite=thorough)
    if held < layout.total_bytes:
        _truncated(path, held, layout)
    if bad:
        raise TranssegError(f"{path}: {bad} NaN/Inf voxel(s) stored (ITK's NIfTI reader would read them as 0). "
                            f"Replace them in the file, for example by 0 or the background value.")


def _truncated(path: Path, held: int, layout: NiftiLayout) -> None:
    raise TranssegError(f"{path}: truncated: holds {held} of the {layout.total_bytes} bytes its NIfTI header "
                        f"implies (ITK would read the missing voxels as zeros). Copy or export the file again.")
