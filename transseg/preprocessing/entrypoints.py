"""``run_preprocess``: every training case of a dataset through the pipeline, crash-safe and resumable.

Layout under ``$TRANSSEG_preprocessed/DatasetXXX_Name/``::

    plans.json                    (from planning)
    <plans_name>/CASE.npz         data (C, Z, Y, X), seg (Z, Y, X); uncompressed, memory-mappable
                                  (plans.data_identifier names another plans' folder to share)
    <plans_name>/CASE.json        how to undo it; written last, so it marks a complete case
    gt_segmentations/CASE.<ext>   byte copies of the original label files, for evaluation

A case whose CASE.json names the current plans hash (and whose archive headers read back) is
skipped unless ``overwrite``; temporaries left by a killed run are removed first. Failing cases
are collected and reported together once the others have finished.
"""
from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from ..dataset import CaseFiles, load_dataset, require_training_cases
from ..files import atomic_path, exclusive_lock, remove_stale_temporaries
from ..io import image_suffix
from ..parallel import raise_on_failures, run_cases
from ..paths import TranssegError, canonical_dataset_name, find_dataset_folder, get_root
from ..planning.plans import DataPlan, load_plans, plans_path
from .case_store import case_is_current, json_path, load_properties, save_case
from .preprocessor import preprocess_case

logger = logging.getLogger(__name__)
PathLike = Optional[Union[str, Path]]
GROUND_TRUTH_FOLDER = "gt_segmentations"
LOCK_FILE = ".preprocessing.lock"    # one run per dataset folder: a second would remove the first's temporaries


@dataclass(frozen=True)
class _Job:
    case: CaseFiles
    plan: DataPlan
    plans_name: str
    plans_hash: str
    output: Path


def preprocessed_cases_folder(dataset_folder: Path, plans_name: str = "plans") -> Path:
    """Where the CASE.npz/CASE.json files of one plans live (what the trainer reads)."""
    return Path(dataset_folder) / plans_name


def ground_truth_folder(dataset_folder: Path) -> Path:
    return Path(dataset_folder) / GROUND_TRUTH_FOLDER


def _preprocess_one(job: _Job) -> dict:
    start = time.perf_counter()
    data, seg, properties = preprocess_case(job.case, job.plan)
    properties.update(plans_name=job.plans_name, plans_hash=job.plans_hash)
    save_case(job.output, job.case.identifier, data, seg, properties)
    return {"seconds": time.perf_counter() - start, "shape": list(data.shape)}


def copy_ground_truth(label: Path, folder: Path, identifier: str, overwrite: bool = False) -> bool:
    """Copy a label file byte for byte (mtime kept); skipped when an identical-looking copy exists."""
    destination = folder / f"{identifier}{image_suffix(label)}"
    source = label.stat()
    if destination.is_file() and not overwrite:
        existing = destination.stat()
        if existing.st_size == source.st_size and int(existing.st_mtime) == int(source.st_mtime):
            return False
    with atomic_path(destination) as temporary:
        shutil.copy2(label, temporary)
    return True


def _input_bytes(case: CaseFiles) -> int:
    try:
        return sum(p.stat().st_size for p in case.images)
    except OSError:
        return 0


def _copy_all_ground_truth(cases: list[CaseFiles], folder: Path, overwrite: bool) -> None:
    for case in cases:
        try:
            copy_ground_truth(case.label, folder, case.identifier, overwrite)
        except OSError as error:   # reported again, by name, when the case itself is read
            logger.warning("%s: ground truth not copied (%s)", case.label, error.strerror or error)


def _refuse_overwriting_shared_cases(output: Path, todo: list[CaseFiles], plans_hash: str, plans_file: Path,
                                     plans_name: str) -> None:
    """A variant pointing at another plans' cases (``data_identifier``) must never replace them with other data."""
    if output.name == plans_name:
        return
    def made_with(identifier: str):
        try:
            return load_properties(output, identifier).get("plans_hash")
        except TranssegError:          # a damaged record: nothing worth keeping
            return None

    other = [c.identifier for c in todo if json_path(output, c.identifier).is_file()
             and made_with(c.identifier) not in (None, plans_hash)]
    if other:
        raise TranssegError(f"{plans_file}: its data_identifier shares the cases in {output}, but they were made with "
                            f"other data fields ({len(other)} case(s), e.g. {other[0]}); preprocessing would replace "
                            f"them under the plans that own them. Set \"data_identifier\" to null (own folder "
                            f"{plans_name}/) or rerun transseg_plan_experiment --plans_name {plans_name}.")


def run_preprocess(dataset: Union[str, int], raw_root: PathLike = None, preprocessed_root: PathLike = None,
                   num_processes: int = 2, overwrite: bool = False, plans_name: str = "plans") -> dict:
    """Preprocess every training case; returns a summary, raises listing the cases that failed.

    Everything is checked before the first case: the dataset, every field of the plans, and that no
    other run works on this dataset folder (a lock file that a killed run does not leave stale).
    """
    start = time.perf_counter()
    raw_folder = find_dataset_folder(dataset, get_root("raw", raw_root))
    spec = load_dataset(raw_folder)
    training = require_training_cases(spec)
    dataset_folder = get_root("preprocessed", preprocessed_root) / canonical_dataset_name(raw_folder.name)
    plans_file = plans_path(dataset_folder, plans_name)
    if not plans_file.is_file():
        raise TranssegError(f"{plans_file}: no plans yet; run transseg_plan_and_preprocess -d {dataset} "
                            f"(or transseg_plan_experiment) first.")
    plans = load_plans(plans_file)
    if len(plans.data.normalization) != spec.num_channels:
        raise TranssegError(f"{plans_file}: plans for {len(plans.data.normalization)} channel(s), but "
                            f"{raw_folder} has {spec.num_channels}; rerun the planning.")
    mismatch = sorted(set(spec.label_values) ^ set(plans.data.label_values))
    if mismatch:
        raise TranssegError(f"{plans_file}: label values {plans.data.label_values} differ from dataset.json's "
                            f"{spec.label_values}; rerun the planning.")
    plans_hash = plans.content_hash()
    output = preprocessed_cases_folder(dataset_folder, plans.cases_folder_name(plans_name))   # shared by variants
    ground_truth = ground_truth_folder(dataset_folder)
    with exclusive_lock(dataset_folder / LOCK_FILE, "preprocessing"):
        output.mkdir(parents=True, exist_ok=True)
        ground_truth.mkdir(parents=True, exist_ok=True)
        removed = remove_stale_temporaries(output) + remove_stale_temporaries(ground_truth)
        if removed:
            logger.info("Removed %d temporary file(s) left by an interrupted run.", removed)
        _copy_all_ground_truth(training, ground_truth, overwrite)

        todo, skipped = [], []
        for case in training:
            if not overwrite and case_is_current(output, case.identifier, plans_hash):
                skipped.append(case.identifier)
            else:
                todo.append(case)
        if skipped:
            logger.info("%d of %d cases are already preprocessed with these plans; skipped (use --overwrite to "
                        "redo).", len(skipped), len(training))
        _refuse_overwriting_shared_cases(output, todo, plans_hash, plans_file, plans_name)
        todo.sort(key=_input_bytes, reverse=True)   # largest first: the workers finish together
        jobs = [(c.identifier, _Job(c, plans.data, plans_name, plans_hash, output)) for c in todo]
        outcomes = run_cases(_preprocess_one, jobs, max(1, num_processes), "preprocessing")
    summary = {
        "output_folder": str(output),
        "ground_truth_folder": str(ground_truth),
        "plans_hash": plans_hash,
        "written": [o.name for o in outcomes if o.ok],
        "skipped": skipped,
        "failed": {o.name: o.error for o in outcomes if not o.ok},
        "removed_temporaries": removed,
        "seconds": round(time.perf_counter() - start, 3),
    }
    logger.info("Preprocessed %d case(s), skipped %d, failed %d, in %.1f s -> %s", len(summary["written"]),
                len(skipped), len(summary["failed"]), summary["seconds"], output)
    raise_on_failures(outcomes, "Preprocessing")
    return summary


__all__ = ["run_preprocess", "preprocessed_cases_folder", "ground_truth_folder", "copy_ground_truth"]
