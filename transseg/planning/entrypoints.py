"""The planning stages as Python functions; the console scripts are thin fronts over these."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Optional, Union

from ..dataset import load_dataset
from ..files import load_json, save_json
from ..integrity import verify_dataset_integrity
from ..paths import TranssegError, canonical_dataset_name, find_dataset_folder, get_root, resolve_dataset_name
from .fingerprint import check_fingerprint, extract_fingerprint, fingerprint_path
from .planner import PlannerOptions, plan_experiment
from .plans import Plans, load_plans, plans_path, save_plans

logger = logging.getLogger(__name__)
PathLike = Optional[Union[str, Path]]
DEFAULT_PLANS_NAME = "plans"


def preprocessed_dataset_folder(dataset: Union[str, int], raw_root: PathLike = None,
                                preprocessed_root: PathLike = None) -> Path:
    """``$TRANSSEG_preprocessed/DatasetXXX_Name`` for a dataset id (found in the raw root, else there)."""
    preprocessed = get_root("preprocessed", preprocessed_root)
    try:
        raw = get_root("raw", raw_root)
    except TranssegError:
        raw = None
    return preprocessed / resolve_dataset_name(dataset, raw, preprocessed)


def verify_dataset(dataset: Union[str, int], raw_root: PathLike = None, num_processes: int = 1) -> None:
    """Raise one error that lists every problem of every case, or return quietly."""
    folder = find_dataset_folder(dataset, get_root("raw", raw_root))
    problems = verify_dataset_integrity(load_dataset(folder), num_processes)
    if problems:
        raise TranssegError(f"Dataset {folder} failed the integrity check ({len(problems)} problems):\n"
                            + "\n".join(f"  {p}" for p in problems))
    logger.info("Dataset %s passed the integrity check.", folder.name)


def run_extract_fingerprint(dataset: Union[str, int], raw_root: PathLike = None, preprocessed_root: PathLike = None,
                            num_processes: int = 1, verify: bool = False, clean: bool = False) -> Path:
    """Write fingerprint.json; an existing one is kept unless ``clean``."""
    folder = find_dataset_folder(dataset, get_root("raw", raw_root))
    name = canonical_dataset_name(folder.name)
    output = fingerprint_path(get_root("preprocessed", preprocessed_root) / name)
    if verify:
        verify_dataset(folder.name, raw_root, num_processes)
    if output.is_file() and not clean:
        logger.info("Fingerprint %s exists; kept (use --clean to recompute).", output)
        return output
    fingerprint = extract_fingerprint(load_dataset(folder), name, num_processes)
    save_json(fingerprint, output)
    logger.info("Fingerprint written to %s", output)
    return output


def shared_cases_folder(folder: Path, plans: Plans) -> Optional[str]:
    """The cases folder of another plans in ``folder`` whose preprocessing is the same as ``plans``', or None.

    The same means the same :meth:`Plans.content_hash` (every data field preprocessing reads);
    the default ``plans.json`` is preferred, then the others by name.
    """
    if plans.plans_name == DEFAULT_PLANS_NAME:
        return None
    candidates = sorted(folder.glob("*.json"), key=lambda p: (p.stem != DEFAULT_PLANS_NAME, p.name))
    for candidate in candidates:
        if candidate.stem in (plans.plans_name, "fingerprint") or candidate.name.endswith(".previous.json"):
            continue
        try:
            other = load_plans(candidate)
        except TranssegError:
            continue                    # splits_final.json and other JSON files
        if other.content_hash() == plans.content_hash():
            return other.cases_folder_name(candidate.stem)
    return None


def run_plan_experiment(dataset: Union[str, int], raw_root: PathLike = None, preprocessed_root: PathLike = None,
                        options: PlannerOptions = PlannerOptions(), plans_name: str = DEFAULT_PLANS_NAME) -> Path:
    """Write ``<plans_name>.json`` from fingerprint.json; different existing plans are kept as *.previous.json.

    A variant (``plans_name`` other than ``plans``) whose preprocessing equals an existing plans'
    (say ``--slices 1``: only the window differs) points at that plans' preprocessed cases through
    ``data_identifier``, so it needs no second preprocessing.
    """
    folder = preprocessed_dataset_folder(dataset, raw_root, preprocessed_root)
    source = fingerprint_path(folder)
    if not source.is_file():
        raise TranssegError(f"{source}: no fingerprint yet; run transseg_extract_fingerprint -d {dataset} first.")
    plans = plan_experiment(check_fingerprint(load_json(source), source), options)
    plans.plans_name = plans_name
    plans.data_identifier = shared_cases_folder(folder, plans)
    if plans.data_identifier is not None:
        plans.decisions.append(f"preprocessed data: shared with '{plans.data_identifier}' (the same data fields "
                               f"preprocessing reads); no second preprocessing")
    elif plans_name != DEFAULT_PLANS_NAME:
        plans.decisions.append(f"preprocessed data: own folder '{plans_name}' (no plans with the same data fields); "
                               f"run transseg_preprocess -d {dataset} --plans_name {plans_name}")
    plans = Plans.from_dict(plans.to_dict(), "the plans just made")
    output = plans_path(folder, plans.plans_name)
    if output.is_file():
        try:
            unchanged = load_plans(output) == plans
        except TranssegError:
            unchanged = False
        if not unchanged:
            backup = output.with_name(output.stem + ".previous.json")
            shutil.copyfile(output, backup)
            logger.info("Existing plans differ; the old ones are kept as %s", backup)
    save_plans(plans, output)
    for line in plans.decisions:
        logger.info("  %s", line)
    logger.info("Plans written to %s", output)
    return output
