"""splits_final.json: the five cross-validation folds, made once from a seeded shuffle, then read.

Like nnU-Net's, the file lives beside plans.json and is a list of {"train": [...], "val": [...]}
objects, so a user may edit it (or bring nnU-Net's) and every later run follows the edit.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Union

import numpy as np

from ..files import load_json, save_json
from ..paths import TranssegError

logger = logging.getLogger(__name__)
SPLITS_FILE = "splits_final.json"
SPLIT_SEED = 12345


def make_splits(identifiers: list[str], num_folds: int = 5, seed: int = SPLIT_SEED) -> list[dict]:
    """Shuffle the sorted ids with ``seed`` and deal them into ``num_folds`` validation sets."""
    ids = sorted(identifiers)
    if len(ids) < num_folds:
        raise TranssegError(f"{num_folds}-fold cross-validation needs at least {num_folds} training cases, "
                            f"this dataset has {len(ids)}; train with fold 'all' instead.")
    order = np.random.default_rng(seed).permutation(len(ids))
    folds = np.array_split(order, num_folds)
    splits = []
    for fold in folds:
        held_out = set(fold.tolist())
        splits.append({"train": sorted(ids[i] for i in order if i not in held_out),
                       "val": sorted(ids[i] for i in held_out)})
    return splits


def load_or_create_splits(folder: Path, identifiers: list[str], num_folds: int = 5) -> list[dict]:
    """Read ``folder/splits_final.json``, or write it first when it does not exist."""
    path = Path(folder) / SPLITS_FILE
    if path.is_file():
        splits = load_json(path)
        _check_splits(splits, identifiers, path)
        return splits
    splits = make_splits(identifiers, num_folds)
    save_json(splits, path)
    logger.info("Wrote %d folds to %s", len(splits), path)
    return splits


def _check_splits(splits, identifiers: list[str], path: Path) -> None:
    if not isinstance(splits, list) or not all(isinstance(s, dict) and {"train", "val"} <= set(s) for s in splits):
        raise TranssegError(f"{path}: expected a list of {{\"train\": [...], \"val\": [...]}} objects.")
    known = set(identifiers)
    for index, split in enumerate(splits):
        unknown = sorted((set(split["train"]) | set(split["val"])) - known)
        if unknown:
            raise TranssegError(f"{path}: fold {index} names case(s) that are not preprocessed: {unknown[:5]}.")


def parse_fold(fold: Union[str, int]) -> Union[int, str]:
    """'fold0', '0' or 0 -> 0; 'all' -> 'all'."""
    text = str(fold).strip().lower()
    if text == "all":
        return "all"
    if text.startswith("fold"):
        text = text[4:].lstrip("_")
    if not text.isdigit():
        raise TranssegError(f"fold '{fold}' is not understood; use fold0..fold4, 0..4 or all.")
    return int(text)


def fold_cases(fold: Union[int, str], splits: list[dict], identifiers: list[str]) -> tuple[list[str], list[str]]:
    """(training ids, validation ids) of a fold; 'all' trains on every case and validates on none."""
    if fold == "all":
        return sorted(identifiers), []
    if not 0 <= fold < len(splits):
        raise TranssegError(f"fold {fold} does not exist: {len(splits)} folds are defined (0..{len(splits) - 1}).")
    return list(splits[fold]["train"]), list(splits[fold]["val"])


def fold_folder_name(fold: Union[int, str]) -> str:
    return f"fold_{fold}"
