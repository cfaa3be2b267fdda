"""Checkpoints: written crash-safe, read with ``weights_only=True``, refused when they do not fit.

A checkpoint is a plain dict of tensors, numbers, strings and lists (nothing that needs
unpickling): the model, optimiser, scheduler and grad-scaler states, the step, the best
validation Dice and its moving average, and what it belongs to (dataset, plans name and hash,
fold, the effective plans and the ModelConfig), so that prediction needs nothing else.
"""
from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch

from .files import atomic_path
from .paths import TranssegError

CHECKPOINT_FORMAT = "transseg-checkpoint"
CHECKPOINT_VERSION = 1
LATEST, BEST, FINAL = "checkpoint_latest.pt", "checkpoint_best.pt", "checkpoint_final.pt"
CHECKPOINT_NAMES = {"latest": LATEST, "best": BEST, "final": FINAL}
FOLD_FOLDER = re.compile(r"^fold_(\d+|all)$")


def save_checkpoint(state: dict, path: Union[str, Path]) -> Path:
    """torch.save to a temporary name beside ``path``, fsync, rename, fsync the folder: never a
    half-written checkpoint, not even after a node crash right after the rename."""
    with atomic_path(path, durable=True) as temporary:
        torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}, temporary)
    return Path(path)


def load_checkpoint(path: Union[str, Path], map_location: Any = "cpu", mapped: bool = False) -> dict:
    """Read a checkpoint without unpickling code; a missing, truncated or foreign file is a clear error.

    ``mapped``: memory-map the file, so that only the tensors used are read. Prediction uses it: it
    needs the network, a third of a training checkpoint (the optimiser keeps two moments per weight;
    BEiT-Base + UPerNet: 0.6 of 1.9 GB), and reading the rest cost up to 25 s from a cold disk."""
    path = Path(path)
    if not path.is_file():
        raise TranssegError(f"{path}: checkpoint not found.")
    if not zipfile.is_zipfile(path):
        raise TranssegError(f"{path}: truncated or damaged checkpoint (not a complete torch archive, "
                            f"{path.stat().st_size} bytes); use another checkpoint or train again.")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mapped)
    except Exception as error:   # torch raises RuntimeError/UnpicklingError/EOFError for damaged archives
        raise TranssegError(f"{path}: truncated or damaged checkpoint ({type(error).__name__}: "
                            f"{str(error).splitlines()[0] if str(error) else 'unreadable'}).") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise TranssegError(f"{path}: not a TransSeg checkpoint.")
    if state.get("version") != CHECKPOINT_VERSION:
        raise TranssegError(f"{path}: checkpoint version {state.get('version')}, this TransSeg reads "
                            f"{CHECKPOINT_VERSION}.")
    return state


def check_belongs(state: dict, path: Union[str, Path], dataset_name: str, plans_name: str, plans_hash: str) -> None:
    """Refuse a checkpoint made for another dataset or other plans, naming both sides."""
    theirs = (state.get("dataset_name"), state.get("plans_name"), state.get("plans_hash"))
    ours = (dataset_name, plans_name, plans_hash)
    if theirs != ours:
        raise TranssegError(f"{path}: this checkpoint belongs to dataset {theirs[0]}, plans '{theirs[1]}' "
                            f"(hash {theirs[2]}), but this run uses dataset {ours[0]}, plans '{ours[1]}' "
                            f"(hash {ours[2]}). Train this fold afresh, or point at the matching plans.")


def check_finite_weights(state: dict, path: Union[str, Path]) -> None:
    """Refuse a network with NaN or infinite weights (a training run that diverged): every prediction
    from it would be noise, arg-maxed into a plausible-looking label map."""
    bad = [name for name, tensor in state["model"].items()
           if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if bad:
        raise TranssegError(f"{path}: {len(bad)} weight tensor(s) hold NaN or infinity (first: {bad[0]}); the "
                            f"training diverged. Predict with another checkpoint (-chk best or latest) or fold, "
                            f"or train again with a lower learning rate.")


def checkpoint_file(fold_folder: Union[str, Path], which: str) -> Path:
    if which not in CHECKPOINT_NAMES:
        raise TranssegError(f"checkpoint '{which}' is not one of {sorted(CHECKPOINT_NAMES)}.")
    return Path(fold_folder) / CHECKPOINT_NAMES[which]


def trained_folds(model_folder: Union[str, Path], which: str = "final") -> list[str]:
    """Fold names ('0', ..., 'all') whose ``fold_X/`` holds checkpoint ``which``: numbers in order, 'all' last."""
    folder = Path(model_folder)
    if not folder.is_dir():
        return []
    folds = [m.group(1) for p in folder.iterdir() for m in [FOLD_FOLDER.match(p.name)]
             if m and p.is_dir() and checkpoint_file(p, which).is_file()]
    return sorted(folds, key=lambda f: (f == "all", int(f) if f.isdigit() else 0))


def chosen_folds(model_folder: Union[str, Path], folds: Optional[Sequence[Union[int, str]]], which: str) -> list[str]:
    """``folds`` (default: every fold with checkpoint ``which``), refused naming those that lack it."""
    available = trained_folds(model_folder, which)
    chosen = [str(f) for f in folds] if folds else available
    missing = [f for f in chosen if f not in available]
    if missing or not chosen:
        raise TranssegError(f"{model_folder}: no checkpoint_{which}.pt for fold(s) {missing or 'any'}; "
                            f"folds with one: {available or 'none'}.")
    return chosen
