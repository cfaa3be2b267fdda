"""The cases of a prediction input: a folder in the dataset's layout, or a single image file.

MSD: one (possibly 4D) file per case, named ``CASE.nii.gz``. nnU-Net: one file per channel,
``CASE_0000.nii.gz``, ``CASE_0001.nii.gz``, ... A folder is read in the layout its files show:
files that group into complete channel sets 0..C-1 are nnU-Net cases, anything else is one MSD
case per file (so ``hippocampus_0001.nii.gz``, whose "channel" would be 1, stays a case).

Kept free of torch: preprocessing worker processes import this module to run :func:`preprocess_input`.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from ..dataset import CaseFiles, is_hidden_junk, strip_suffix
from ..io import SUPPORTED_SUFFIXES, image_suffix
from ..paths import TranssegError
from ..planning.plans import DataPlan
from ..preprocessing import preprocess_case

_CHANNEL = re.compile(r"^(.+)_(\d{4})$")


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not is_hidden_junk(p) and image_suffix(p) in SUPPORTED_SUFFIXES)


def _as_channel_sets(files: list[Path], num_channels: int) -> list[CaseFiles] | None:
    """nnU-Net cases when every file is channel 0..C-1 of a complete case, else None."""
    grouped: dict[str, dict[int, Path]] = {}
    for path in files:
        match = _CHANNEL.match(strip_suffix(path.name))
        if match is None:
            return None
        grouped.setdefault(match.group(1), {})[int(match.group(2))] = path
    if not grouped or any(sorted(channels) != list(range(num_channels)) for channels in grouped.values()):
        return None
    return [CaseFiles(name, tuple(channels[c] for c in range(num_channels))) for name, channels in sorted(grouped.items())]


def input_cases(source: Path, num_channels: int) -> list[CaseFiles]:
    """The cases to predict from a folder or one file; a folder without images is an error."""
    source = Path(source)
    if source.is_file():
        match = _CHANNEL.match(strip_suffix(source.name))
        if match and num_channels > 1:       # one channel file named: take its siblings
            siblings = [source.with_name(f"{match.group(1)}_{c:04d}{image_suffix(source)}") for c in range(num_channels)]
            return [CaseFiles(match.group(1), tuple(siblings))]
        return [CaseFiles(strip_suffix(source.name), (source,))]
    if not source.is_dir():
        raise TranssegError(f"{source}: no such file or folder to predict.")
    files = _image_files(source)
    if not files:
        raise TranssegError(f"{source}: no images to predict (looked for {', '.join(SUPPORTED_SUFFIXES)} files).")
    grouped = _as_channel_sets(files, num_channels)
    if grouped is not None:
        return grouped
    return [CaseFiles(strip_suffix(p.name), (p,)) for p in files]


def part_of(cases: list[CaseFiles], num_parts: int, part_id: int) -> list[CaseFiles]:
    """The cases of part ``part_id`` of ``num_parts``: chosen by a hash of each case's name, so the parts are
    disjoint, cover every case, and do not depend on the order the files are listed in (or on which other
    files are there): processes on different GPUs or nodes agree without talking to each other."""
    return [case for case in cases if case_part(case.identifier, num_parts) == part_id]


def case_part(identifier: str, num_parts: int) -> int:
    """The part (0 .. num_parts - 1) a case belongs to: sha256 of its name, modulo the parts."""
    return int.from_bytes(hashlib.sha256(identifier.encode("utf-8")).digest()[:8], "big") % num_parts


def output_name(case: CaseFiles) -> str:
    """The prediction's file name: the case name in the input's format."""
    return case.identifier + image_suffix(case.images[0])


def preprocess_input(case: CaseFiles, plan: DataPlan) -> tuple[np.ndarray, dict]:
    """Preprocess an image-only case exactly as training's cases were (labels, if any, are not read)."""
    data, _, properties = preprocess_case(CaseFiles(case.identifier, case.images, None), plan)
    return data, properties
