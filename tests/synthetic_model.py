"""A model folder without training: plans for the real spine CT and randomly initialised tiny networks.

Prediction does not care whether weights were trained; folds with different seeds give different
probabilities (what an ensemble test needs), and checkpoints can carry any step number (so a test
can tell which one was loaded). Seconds to build, against minutes for training.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from transseg.checkpoint import save_checkpoint
from transseg.inference.window_spec import WindowSpec
from transseg.model import build_model
from transseg.planning.plans import ChannelNormalization, DataPlan, ModelPlan, Plans, TrainingPlan, save_plans
from transseg.training.config import model_config_from_plans

SPINE_LABELS = [0, 21, 22, 23]


def spine_plans(slice_spacing=None, resolution=(32, 48)) -> Plans:
    data = DataPlan(reorient_to="LPS", slice_axis=0, in_plane_spacing=[1.5, 1.5], slice_spacing=slice_spacing,
                    resolution=list(resolution), normalization=[ChannelNormalization("ct", clip=[-1000.0, 2000.0])],
                    label_values=SPINE_LABELS, label_names=["bg", "L2", "L3", "L4"])
    model = ModelPlan(backbone="vit_tiny_patch16_224", pretrained=None, decoder_channels=32)
    return Plans(dataset_name="Dataset091_Spine", data=data, model=model,
                 training=TrainingPlan(global_batch_size=16, batch_size_per_gpu=16))


def write_fold(folder: Path, plans: Plans, fold: str, seed: int, step: int, which: str = "final") -> Path:
    """fold_<fold>/checkpoint_<which>.pt: a tiny network initialised from ``seed``, recorded as ``step``."""
    config = model_config_from_plans(plans)
    torch.manual_seed(seed)
    network = build_model(config)
    with torch.no_grad():                       # larger logits: random weights then disagree about classes
        for parameter in network.parameters():
            parameter.mul_(3.0)
    state = {"model": network.state_dict(), "step": step, "dataset_name": plans.dataset_name,
             "plans_name": plans.plans_name, "plans_hash": plans.content_hash(), "fold": fold,
             "plans": plans.to_dict(), "model_config": config.to_dict(),
             "window": WindowSpec.from_plan(plans.data).to_dict()}
    return save_checkpoint(state, folder / f"fold_{fold}" / f"checkpoint_{which}.pt")


def make_model_folder(folder: Path, plans: Plans, folds: dict[str, int]) -> Path:
    """plans.json, dataset.json and fold_N/checkpoint_final.pt for each fold name -> seed."""
    folder.mkdir(parents=True, exist_ok=True)
    save_plans(plans, folder / "plans.json")
    (folder / "dataset.json").write_text(json.dumps({
        "name": "Spine", "modality": {"0": "CT"},
        "labels": {str(v): n for v, n in zip(SPINE_LABELS, plans.data.label_names)},
        "training": [], "test": []}))
    for fold, seed in folds.items():
        write_fold(folder, plans, fold, seed, step=100 + seed)
    return folder
