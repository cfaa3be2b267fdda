"""The end of a fold, as nnU-Net does it: its validation cases predicted in their original geometry
(``fold_N/validation/CASE.nii.gz``) and scored there against the original labels (``summary.json``),
so every trained fold has a real figure, not one on the resampled grid.

The cases' preprocessed arrays are already on disk, so nothing is read or preprocessed again; the
prediction and export are ``transseg_predict``'s own (``inference.case``).
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..evaluation import evaluate_folder
from ..files import remove_stale_temporaries
from ..inference.case import export_case, predict_case
from ..inference.volume import InferenceSettings, VolumeModel
from ..io import image_suffix
from ..preprocessing import ground_truth_folder, load_case
from .distributed import DistributedContext, barrier
from .trainer import FoldSetup

logger = logging.getLogger(__name__)
VALIDATION_FOLDER = "validation"


def predict_and_evaluate_validation(network: torch.nn.Module, setup: FoldSetup, context: DistributedContext) -> dict:
    """Each rank predicts its share of the validation cases; rank 0 then scores them all."""
    output = setup.fold_folder / VALIDATION_FOLDER
    if context.is_main:
        output.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(output)
    barrier(context)
    network.eval()
    model = VolumeModel(network, setup.spec)
    settings = InferenceSettings.on(context.device, 2 * setup.batch.per_gpu_batch)
    for identifier in setup.val_ids[context.rank::context.world_size]:
        data, _, properties = load_case(setup.cases_folder, identifier)
        suffix = image_suffix(properties["label"]) if properties.get("label") else ".nii.gz"
        export_case(predict_case([model], data, properties, context.device, settings), output / f"{identifier}{suffix}")
    barrier(context)
    if not context.is_main:
        return {}
    summary = evaluate_folder(ground_truth_folder(Path(setup.cases_folder).parent), output,
                              dict(zip(setup.plans.data.label_values, setup.plans.data.label_names)),
                              output / "summary.json", cases=setup.val_ids)
    logger.info("Validation in the original geometry (%d cases): mean foreground Dice %.4f -> %s",
                len(setup.val_ids), summary["foreground_mean"]["dice"], output / "summary.json")
    return summary
