"""The dataset fingerprint: what the data is, measured once, read by the planner.

Figures are in numpy array order (Z, Y, X) as stored in each file, like nnU-Net v2's fingerprint,
so the two can be compared number for number. Foreground intensities (label > 0, inside the
non-zero crop) are sampled per case with a fixed seed, so two runs give the same file.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..cropping import box_shape, box_slices, nonzero_bounding_box
from ..dataset import CaseFiles, DatasetSpec, read_case, require_training_cases
from ..parallel import raise_on_failures, run_cases
from ..paths import TranssegError

logger = logging.getLogger(__name__)

FINGERPRINT_VERSION = 1
FOREGROUND_SAMPLES_TOTAL = 1_000_000   # over the whole dataset, equal per case; nnU-Net v2 uses 1e8
SAMPLING_SEED = 1234


@dataclass(frozen=True)
class _CaseJob:
    case: CaseFiles
    num_samples: int
    num_channels: int


def intensity_statistics(values: np.ndarray) -> dict:
    if values.size == 0:
        return {k: None for k in ("mean", "std", "median", "min", "max", "percentile_00_5", "percentile_99_5")}
    values = values.astype(np.float64, copy=False)
    p005, median, p995 = np.percentile(values, (0.5, 50.0, 99.5))
    return {
        "mean": float(values.mean()), "std": float(values.std()), "median": float(median),
        "min": float(values.min()), "max": float(values.max()),
        "percentile_00_5": float(p005), "percentile_99_5": float(p995),
    }


def label_statistics(seg: np.ndarray) -> dict[str, dict]:
    """Per label value: voxel count, and in how many slices along each array axis it occurs."""
    if np.issubdtype(seg.dtype, np.integer) and seg.size and seg.min() >= 0:
        all_counts = np.bincount(seg.ravel())          # a counting pass; np.unique would sort
        values = np.flatnonzero(all_counts)
        counts = all_counts[values]
    else:
        values, counts = np.unique(seg, return_counts=True)
    stats = {}
    for value, count in zip(values.tolist(), counts.tolist()):
        mask = seg == value
        slices = [int(mask.any(axis=tuple(a for a in range(3) if a != axis)).sum()) for axis in range(3)]
        stats[str(value)] = {"voxels": int(count), "slices": slices}
    return stats


def analyse_case(job: _CaseJob) -> dict:
    data, seg, geometry = read_case(job.case)
    if data.shape[0] != job.num_channels:
        raise TranssegError(f"{job.case.images[0]}: {data.shape[0]} image channel(s), dataset.json declares "
                            f"{job.num_channels}.")
    box = nonzero_bounding_box(data)
    cropped = data[(slice(None), *box_slices(box))]
    foreground = seg[box_slices(box)] > 0
    rng = np.random.RandomState(SAMPLING_SEED)
    samples = []
    for channel in cropped:
        voxels = channel[foreground]
        samples.append(rng.choice(voxels, job.num_samples, replace=True).astype(np.float32)
                       if voxels.size else np.zeros(0, np.float32))
    return {
        "identifier": job.case.identifier,
        "spacing": list(geometry.spacing_zyx),
        "shape_before_crop": list(geometry.shape),
        "shape_after_crop": box_shape(box),
        "crop_box": box,
        "orientation": geometry.orientation,
        "direction": list(geometry.direction),
        "labels": label_statistics(seg),
        "_samples": samples,
    }


def extract_fingerprint(spec: DatasetSpec, dataset_name: str, num_processes: int = 1) -> dict:
    """Analyse every training case; raises with the list of failing cases if any cannot be read."""
    training = require_training_cases(spec)
    num_samples = max(1, FOREGROUND_SAMPLES_TOTAL // len(training))
    jobs = [(c.identifier, _CaseJob(c, num_samples, spec.num_channels)) for c in training]
    outcomes = run_cases(analyse_case, jobs, num_processes, "fingerprint")
    raise_on_failures(outcomes, "Fingerprint extraction")
    cases = [o.result for o in outcomes]
    channels = []
    for index, name in enumerate(spec.channel_names):
        pooled = np.concatenate([c["_samples"][index] for c in cases])
        channels.append({
            "name": name,
            "modality": "CT" if spec.is_ct(index) else "MR",
            "foreground_intensity": {**intensity_statistics(pooled), "num_samples": int(pooled.size)},
        })
    for case in cases:
        del case["_samples"]
    relative_sizes = [np.prod(c["shape_after_crop"]) / np.prod(c["shape_before_crop"]) for c in cases]
    return {
        "schema_version": FINGERPRINT_VERSION,
        "dataset_name": dataset_name,
        "source_folder": str(spec.folder),
        "layout": spec.layout,
        "channels": channels,
        "labels": {str(k): v for k, v in sorted(spec.labels.items())},
        "median_relative_size_after_cropping": float(np.median(relative_sizes)),
        "cases": cases,
    }


def fingerprint_path(preprocessed_dataset_folder: Path) -> Path:
    return Path(preprocessed_dataset_folder) / "fingerprint.json"


CASE_KEYS = ("identifier", "spacing", "shape_before_crop", "shape_after_crop", "orientation")


def check_fingerprint(fingerprint: dict, path: Optional[Path] = None) -> dict:
    """The fingerprint if it is one this version wrote and the planner can read; else a message naming the file."""
    source = path or "fingerprint"
    version = fingerprint.get("schema_version") if isinstance(fingerprint, dict) else None
    if version != FINGERPRINT_VERSION:
        raise TranssegError(f"{source}: schema version {version}, this TransSeg reads "
                            f"{FINGERPRINT_VERSION}; rerun transseg_extract_fingerprint.")
    cases, channels = fingerprint.get("cases"), fingerprint.get("channels")
    broken = (not isinstance(cases, list) or not cases or not isinstance(channels, list) or not channels
              or not isinstance(fingerprint.get("labels"), dict)
              or any(not isinstance(c, dict) or any(k not in c for k in CASE_KEYS) for c in cases))
    if broken:
        raise TranssegError(f"{source}: incomplete or hand-edited fingerprint (needs 'channels', 'labels' and "
                            f"'cases' with {', '.join(CASE_KEYS)}); rerun transseg_extract_fingerprint --clean.")
    return fingerprint
