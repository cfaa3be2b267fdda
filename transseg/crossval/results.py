"""The cross-validation predictions of one configuration (or ensemble), and their figures over all folds.

Training's final validation leaves, per fold, ``fold_N/validation/`` with each validation case
predicted in its original geometry (``CASE.nii.gz``, with ``--npz`` also ``CASE.npz``) and
``summary.json`` (written last: a fold without it has not finished). Nothing is scored again
here: the per-case figures of the fold summaries (Dice, IoU, HD95 and NSD from
``transseg.evaluation``) are pooled over every validation case of every fold found.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..evaluation.metrics import METRICS
from ..files import load_json
from ..paths import TranssegError
from ..training.splits import fold_folder_name

logger = logging.getLogger(__name__)
VALIDATION_FOLDER = "validation"     # training.final_validation's folder (imported there with torch; named here)
SUMMARY_FILE = "summary.json"


@dataclass
class FoldResult:
    fold: int
    folder: Path                       # the fold's validation predictions and summary.json
    summary: dict

    @property
    def cases(self) -> list[str]:
        return sorted(self.summary["cases"])

    def reference(self, case: str) -> Path:
        return Path(self.summary["cases"][case]["reference"])

    def probabilities(self, case: str) -> Path:
        """``CASE.npz`` beside the case's prediction (written by training with ``--npz``)."""
        return self.folder / f"{case}.npz"

    def has_probabilities(self) -> bool:
        return all(self.probabilities(case).is_file() for case in self.cases)


@dataclass
class Entry:
    """One candidate: a configuration (its plans name) or an ensemble of configurations."""

    name: str
    kind: str                                  # 'configuration' or 'ensemble'
    model_folder: Path                         # where postprocessing.json goes if this entry is chosen
    members: list[str]
    folds: dict[int, FoldResult] = field(default_factory=dict)
    missing_folds: dict[int, str] = field(default_factory=dict)   # fold -> why it is missing

    def per_case(self) -> dict[str, dict]:
        """Case -> its summary record (metrics per class key), pooled over the folds found."""
        pooled: dict[str, dict] = {}
        for fold in self.folds.values():
            for case, record in fold.summary["cases"].items():
                if case in pooled:
                    raise TranssegError(f"{fold.folder}: case '{case}' is a validation case of two folds; "
                                        f"the folds of {self.name} do not come from one split.")
                pooled[case] = record
        return pooled

    def labels(self) -> dict[int, str]:
        """Label value -> name of the scored classes (from the first fold's summary)."""
        first = next(iter(self.folds.values()))
        return {int(value): name for value, name in first.summary["labels"].items()}


def fold_validation_folder(model_folder: Path, fold: int) -> Path:
    return Path(model_folder) / fold_folder_name(fold) / VALIDATION_FOLDER


def read_fold(model_folder: Path, fold: int) -> tuple[Optional[FoldResult], str]:
    """The fold's result, or (None, why it is missing)."""
    folder = fold_validation_folder(model_folder, fold)
    if not (Path(model_folder) / fold_folder_name(fold)).is_dir():
        return None, f"{Path(model_folder) / fold_folder_name(fold)} does not exist (fold not trained)"
    if not (folder / SUMMARY_FILE).is_file():
        return None, (f"{folder / SUMMARY_FILE} does not exist (the fold's final validation has not finished; "
                      f"run transseg_train with --c or --val)")
    summary = load_json(folder / SUMMARY_FILE)
    if not isinstance(summary, dict) or not {"cases", "labels"} <= set(summary):
        raise TranssegError(f"{folder / SUMMARY_FILE}: not a validation summary (no 'cases' and 'labels').")
    return FoldResult(fold, folder, summary), ""


def collect_configuration(model_folder: Path, plans_name: str, folds: Sequence[int]) -> Entry:
    """A configuration's folds; missing ones are named (in the entry and the log), never silently skipped."""
    if not Path(model_folder).is_dir():
        raise TranssegError(f"{model_folder}: no trained model for plans '{plans_name}' (train its folds with "
                            f"transseg_train DATASET FOLD --plans_name {plans_name}).")
    entry = Entry(plans_name, "configuration", Path(model_folder), [plans_name])
    for fold in folds:
        result, why = read_fold(model_folder, fold)
        if result is None:
            entry.missing_folds[fold] = why
            logger.warning("%s: fold %d is missing: %s", plans_name, fold, why)
        else:
            entry.folds[fold] = result
    if not entry.folds:
        raise TranssegError(f"{model_folder}: none of the folds {list(folds)} has validation results:\n"
                            + "\n".join(f"  fold {f}: {why}" for f, why in entry.missing_folds.items()))
    return entry


def spread(values: Sequence[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "std": float(array.std()), "median": float(np.median(array)),
            "min": float(array.min()), "max": float(array.max())}


def entry_figures(entry: Entry) -> dict:
    """Per class and metric, mean and spread over every validation case of every fold found.

    ``foreground_mean`` is the mean of the per-class means (as in summary.json); the choice of the
    best entry uses its Dice.
    """
    per_case = entry.per_case()
    labels = entry.labels()
    keys = [key for key in next(iter(per_case.values()))["metrics"]]
    classes = {}
    for key in keys:
        classes[key] = {metric: spread([per_case[case]["metrics"][key][metric] for case in sorted(per_case)])
                        for metric in METRICS}
    return {
        "kind": entry.kind,
        "members": entry.members,
        "model_folder": str(entry.model_folder),
        "folds": sorted(entry.folds),
        "missing_folds": {str(fold): why for fold, why in sorted(entry.missing_folds.items())},
        "num_cases": len(per_case),
        "cases": sorted(per_case),
        "labels": {str(value): name for value, name in labels.items()},
        "classes": classes,
        "foreground_mean": {metric: float(np.mean([classes[key][metric]["mean"] for key in keys]))
                            for metric in METRICS},
    }
