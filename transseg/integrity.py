"""``--verify_dataset_integrity``: read every case and report every problem at once.

Beyond what every read checks (missing or unreadable files, NIfTI files cut short, NaN/Inf in the
arrays), it reads NIfTI files a second time to verify their gzip CRC-32 and to find NaN/Inf as
stored, which ITK's reader turns into 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .dataset import CaseFiles, DatasetSpec
from .io import read_channels, read_label
from .parallel import run_cases
from .paths import TranssegError

GEOMETRY_TOLERANCE = 1e-3


@dataclass(frozen=True)
class _CaseCheck:
    case: CaseFiles
    num_channels: int
    label_values: tuple[int, ...]


def _check_files_exist(case: CaseFiles) -> list[str]:
    missing = [p for p in (*case.images, case.label) if p is not None and not p.is_file()]
    return [f"missing file {p}" for p in missing]


def check_case(check: _CaseCheck) -> list[str]:
    """Problems of one case, each a short phrase; the caller prefixes the case name."""
    case = check.case
    problems = _check_files_exist(case)
    if problems:
        return problems
    try:   # thorough: NIfTI gzip CRCs and stored NaN/Inf too (about one more decompression per file)
        data, geometry = read_channels(case.images, thorough=True)
    except TranssegError as error:
        return [str(error)]
    if data.shape[0] != check.num_channels:
        problems.append(f"{data.shape[0]} image channels, dataset.json declares {check.num_channels}")
    if case.label is None:
        return problems
    try:
        seg, label_geometry = read_label(case.label, thorough=True)
    except TranssegError as error:
        return problems + [str(error)]
    problems += [f"label and image disagree in {p}" for p in geometry.agrees_with(label_geometry, GEOMETRY_TOLERANCE)]
    undeclared = sorted(set(np.unique(seg).tolist()) - set(check.label_values))
    if undeclared:
        problems.append(f"label values {undeclared} are not declared in dataset.json "
                        f"(declared: {list(check.label_values)})")
    return problems


def verify_dataset_integrity(spec: DatasetSpec, num_processes: int = 1) -> list[str]:
    """Every problem in the dataset, one line per case and problem (empty list: all good)."""
    problems = []
    if not spec.training:
        problems.append(f"{spec.folder / 'dataset.json'}: no training cases found")
    seen = set()
    for case in spec.training:
        if case.identifier in seen:
            problems.append(f"{case.identifier}: listed more than once")
        seen.add(case.identifier)
    checks = [(c.identifier, _CaseCheck(c, spec.num_channels, tuple(spec.label_values))) for c in spec.training]
    checks += [(c.identifier, _CaseCheck(c, spec.num_channels, ())) for c in spec.test]
    for outcome in run_cases(check_case, checks, num_processes, "verifying dataset"):
        if not outcome.ok:
            problems.append(f"{outcome.name}: {outcome.error}")
        else:
            problems.extend(f"{outcome.name}: {p}" for p in outcome.result)
    return problems
