"""A trained model folder (``<results>/DatasetXXX_Name/<plans_name>``): finding it, and loading its folds.

The folder holds plans.json and dataset.json (copied there by training) and ``fold_N/``
checkpoints; nothing else is needed to predict, so ``-m FOLDER`` works without any environment
variable. Without ``-m`` the dataset is taken from ``-d``, else from the dataset.json of the folder
the command runs in (a task folder), else from the results root when it holds one trained dataset.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..checkpoint import (CHECKPOINT_NAMES, check_belongs, check_finite_weights, checkpoint_file, chosen_folds,
                          load_checkpoint, trained_folds)
from ..model import ModelConfig, build_model
from ..paths import TranssegError, canonical_dataset_name, parse_dataset_folder_name
from ..planning.plans import Plans, load_plans
from .volume import VolumeModel
from .window_spec import WindowSpec

logger = logging.getLogger(__name__)


@dataclass
class FoldModel:
    fold: str
    checkpoint: Path
    step: int
    model: VolumeModel
    model_config: dict = field(default_factory=dict, repr=False)   # as the checkpoint stores it


@dataclass
class TrainedModel:
    folder: Path
    plans: Plans                      # what preprocessing did (the model folder's copy of plans.json)
    folds: list[FoldModel] = field(default_factory=list)

    @property
    def num_channels(self) -> int:
        return len(self.plans.data.normalization)


def _model_folders(results_root: Path) -> list[Path]:
    """Every ``<dataset>/<plans>`` folder under the results root that has a trained fold."""
    if not results_root.is_dir():
        return []
    return [plans for dataset in sorted(results_root.iterdir()) if dataset.is_dir()
            for plans in sorted(dataset.iterdir())
            if plans.is_dir() and any(trained_folds(plans, name) for name in CHECKPOINT_NAMES)]


def _dataset_from_folder(folder: Path) -> Optional[str]:
    """The canonical dataset name of a raw task folder (``Task03_Liver`` -> ``Dataset003_Liver``)."""
    if not (folder / "dataset.json").is_file() or parse_dataset_folder_name(folder.name) is None:
        return None
    return canonical_dataset_name(folder.name)


def _dataset_number(text: str) -> Optional[int]:
    text = str(text).strip()
    if text.isdigit():
        return int(text)
    parsed = parse_dataset_folder_name(text)
    return parsed[0] if parsed else None


def find_model_folder(results_root: Optional[Path], dataset: Optional[str], plans_name: str = "plans",
                      working_folder: Optional[Path] = None) -> Path:
    """The model folder for ``dataset`` (an id or name), or the one the working folder or results root implies."""
    if results_root is None:
        raise TranssegError("TRANSSEG_results is not set and no model folder was given: pass -m "
                            "<results>/DatasetXXX_Name/<plans_name>, or export TRANSSEG_results=/path/to/results.")
    candidates = _model_folders(results_root)
    if dataset is None and working_folder is not None:
        dataset = _dataset_from_folder(working_folder)
        if dataset is not None:
            logger.info("Dataset taken from %s: %s", working_folder / "dataset.json", dataset)
    if dataset is not None:
        wanted = _dataset_number(dataset)
        matches = [c for c in candidates if c.name == plans_name and _dataset_number(c.parent.name) == wanted]
        if len(matches) == 1:
            return matches[0]
        trained = ", ".join(f"{c.parent.name}/{c.name}" for c in candidates) or "none"
        if not matches:
            raise TranssegError(f"No trained model for dataset '{dataset}' (plans '{plans_name}') in {results_root}. "
                                f"Trained there: {trained}.")
        raise TranssegError(f"Dataset '{dataset}' matches several trained models: {trained}; use -m FOLDER.")
    if len(candidates) == 1:
        return candidates[0]
    trained = "\n".join(f"  {c}" for c in candidates) or "  none"
    raise TranssegError(f"Which model? {results_root} holds {len(candidates)} trained models; choose one with "
                        f"-d DATASET or -m FOLDER:\n{trained}")


def _fold_network(state: dict, device: torch.device, like: Optional[FoldModel] = None) -> VolumeModel:
    """The fold's network with its weights. A copy of ``like``'s network when both have the same
    config: building one initialises every weight at random first (2.8 s for BEiT-Base on 2 cores),
    only for the checkpoint to overwrite them."""
    if like is not None and like.model_config == state["model_config"]:
        network = copy.deepcopy(like.model.network)
    else:
        network = build_model(ModelConfig.from_dict({**state["model_config"], "pretrained": None})).to(device)
    network.load_state_dict(state["model"])
    return VolumeModel(network.eval(), WindowSpec.from_dict(state["window"]))


def load_trained_model(folder: Path, folds: Optional[Sequence[str]] = None, checkpoint: str = "final",
                       device: torch.device = torch.device("cpu")) -> TrainedModel:
    """The model folder's plans and the chosen folds' networks, ready for inference."""
    folder = Path(folder)
    plans_file = folder / "plans.json"
    if not plans_file.is_file():
        raise TranssegError(f"{folder}: not a trained model folder (no plans.json); expected "
                            f"<results>/DatasetXXX_Name/<plans_name>.")
    plans = load_plans(plans_file)
    chosen = chosen_folds(folder, folds, checkpoint)
    model, plans_hash = TrainedModel(folder, plans), plans.content_hash()
    for fold in chosen:
        path = checkpoint_file(folder / f"fold_{fold}", checkpoint)
        state = load_checkpoint(path, mapped=True)
        check_belongs(state, path, plans.dataset_name, plans.plans_name, plans_hash)
        check_finite_weights(state, path)
        network = _fold_network(state, device, model.folds[-1] if model.folds else None)
        model.folds.append(FoldModel(fold, path, int(state["step"]), network, state["model_config"]))
    return model
