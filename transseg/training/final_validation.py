"""The end of a fold, as nnU-Net does it: its validation cases predicted in their original geometry
(``fold_N/validation/CASE.nii.gz``) and scored there against the original labels (``summary.json``),
so every trained fold has a real figure, not one on the resampled grid.

Each rank predicts, exports *and scores* its share of the cases (:func:`predict_on_rank`); rank 0
only merges the per-case scores into ``summary.json``, which is written last: a fold whose
``summary.json`` is missing has not finished its final validation (``--c`` then does it, as does
``--val``). With ``save_probabilities`` each case's probabilities are kept as well
(``CASE.npz``: ``probabilities`` float16 on the preprocessed grid and ``properties_json``, the
format ``transseg_predict --save_probabilities`` writes), for choosing configurations and
post-processing afterwards.

The cases' preprocessed arrays are already on disk, so nothing is read or preprocessed again; the
prediction and export are ``transseg_predict``'s own (``inference.case``).
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..evaluation.evaluate import list_label_files, score_case, summarise
from ..evaluation.metrics import DEFAULT_TOLERANCE_MM
from ..files import remove_stale_temporaries, save_json
from ..inference.case import export_case, predict_case
from ..inference.volume import InferenceSettings, VolumeModel
from ..io import image_suffix
from ..paths import TranssegError
from ..preprocessing import ground_truth_folder, load_case
from .distributed import DistributedContext, barrier
from .trainer import FoldSetup
from .validation import predict_on_rank

logger = logging.getLogger(__name__)
VALIDATION_FOLDER = "validation"
SUMMARY_FILE = "summary.json"


def final_validation_done(fold_folder: Path) -> bool:
    return (Path(fold_folder) / VALIDATION_FOLDER / SUMMARY_FILE).is_file()


def predict_and_evaluate_validation(network: torch.nn.Module, setup: FoldSetup, context: DistributedContext,
                                    save_probabilities: bool = False) -> dict:
    """Every rank predicts and scores its share of the validation cases; rank 0 merges and writes the summary."""
    output = setup.fold_folder / VALIDATION_FOLDER
    if context.is_main:
        output.mkdir(parents=True, exist_ok=True)
        (output / SUMMARY_FILE).unlink(missing_ok=True)     # from here on the fold's validation is unfinished
        remove_stale_temporaries(output)
    barrier(context)                                         # the folder exists and holds no stray temporaries
    references = list_label_files(ground_truth_folder(Path(setup.cases_folder).parent))
    missing = [i for i in setup.val_ids if i not in references]
    if missing:
        raise TranssegError(f"{ground_truth_folder(Path(setup.cases_folder).parent)}: no reference label for "
                            f"validation case(s) {', '.join(missing[:5])}; rerun transseg_preprocess.")
    data_plan = setup.plans.data
    labels = {value: name for value, name in zip(data_plan.label_values, data_plan.label_names) if value != 0}
    model = VolumeModel(network, setup.spec)
    settings = InferenceSettings.on(context.device, batch_size=2 * setup.batch.per_gpu_batch,
                                    precision=setup.plans.training.validation_precision)

    def predict_and_score(identifier: str) -> dict:
        data, _, properties = load_case(setup.cases_folder, identifier)
        suffix = image_suffix(properties["label"]) if properties.get("label") else ".nii.gz"
        prediction = predict_case([model], data, properties, context.device, settings,
                                  keep_probabilities=save_probabilities)
        path = export_case(prediction, output / f"{identifier}{suffix}", save_probabilities=save_probabilities)
        return score_case(references[identifier], path, labels)

    per_case = predict_on_rank(network, setup.cases_folder, setup.val_ids, context, predict_and_score,
                               description="final validation")
    if not context.is_main:
        return {}
    summary = {"reference_folder": str(ground_truth_folder(Path(setup.cases_folder).parent)),
               "prediction_folder": str(output),
               **summarise(dict(sorted(per_case.items())), labels, float(DEFAULT_TOLERANCE_MM))}
    save_json(summary, output / SUMMARY_FILE)
    logger.info("Validation in the original geometry (%d cases): mean foreground Dice %.4f -> %s",
                len(setup.val_ids), summary["foreground_mean"]["dice"], output / SUMMARY_FILE)
    return summary
