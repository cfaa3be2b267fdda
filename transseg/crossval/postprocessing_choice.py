"""Which post-processing to keep, measured on cross-validation predictions (nnU-Net's rule).

Two steps are tried in order: (a) keep only the largest connected component of all foreground
together; (b) for each class, keep only its largest component (on top of (a) when (a) was kept).
A step is kept only if it strictly raises the mean Dice of the classes it touches: all foreground
classes for (a), its own class for (b). Means are over every validation case of every fold
(per class), then over the classes, as in summary.json.

Each case is read once; the baseline Dice comes from the fold summaries, and a class's Dice is
computed again (``evaluation.metrics.dice_score``, binary_metrics' Dice) only where a step changed its mask.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..evaluation.evaluate import class_key, read_label_pair
from ..evaluation.metrics import dice_score
from ..parallel import raise_on_failures, run_cases
from ..postprocessing import PostprocessingRules, remove_all_but_largest
from .results import Entry

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _CaseJob:
    reference: Path
    prediction: Path
    baseline: dict[int, float]          # label value -> Dice of the prediction as it is


def _dice_after(reference: np.ndarray, before: np.ndarray, after: np.ndarray, value: int, known: float) -> float:
    """Dice of class ``value`` in ``after``; ``known`` (its Dice in ``before``) when the mask did not change."""
    mask = after == value
    if np.array_equal(mask, before == value):
        return known
    return dice_score(reference == value, mask)


def _measure_case(job: _CaseJob) -> dict:
    """Dice per class: as is, after (a), after (b) alone, and after (a) then (b)."""
    reference, prediction, _ = read_label_pair(job.reference, job.prediction)
    after_a = remove_all_but_largest(prediction)
    dice_a = {v: _dice_after(reference, prediction, after_a, v, d) for v, d in job.baseline.items()}
    dice_b, dice_ab = {}, {}
    for value, dice in job.baseline.items():
        dice_b[value] = _dice_after(reference, prediction, remove_all_but_largest(prediction, [value]), value,
                                    dice)
        dice_ab[value] = _dice_after(reference, after_a, remove_all_but_largest(after_a, [value]), value,
                                     dice_a[value])
    return {"a": dice_a, "b": dice_b, "ab": dice_ab}


def _class_means(per_case: list[dict[int, float]], values: list[int]) -> dict[int, float]:
    return {value: float(np.mean([case[value] for case in per_case])) for value in values}


def choose_postprocessing(entry: Entry, num_processes: int = 1) -> PostprocessingRules:
    """The rules for ``entry``, with the Dice before and after each step in ``measurements``."""
    labels = entry.labels()
    values = sorted(v for v in labels if v != 0)
    per_case = entry.per_case()
    jobs = []
    for case, record in sorted(per_case.items()):
        baseline = {v: float(record["metrics"][class_key(v, labels[v])]["dice"]) for v in values}
        jobs.append((case, _CaseJob(Path(record["reference"]), Path(record["prediction"]), baseline)))
    outcomes = run_cases(_measure_case, jobs, max(1, num_processes), "post-processing")
    raise_on_failures(outcomes, "Choosing the post-processing")
    baseline = _class_means([job.baseline for _, job in jobs], values)
    measured = {step: _class_means([o.result[step] for o in outcomes], values) for step in ("a", "b", "ab")}

    rules = PostprocessingRules(chosen_for=entry.name)
    before, after = float(np.mean(list(baseline.values()))), float(np.mean(list(measured["a"].values())))
    rules.largest_foreground_component = after > before
    rules.measurements.append({"step": "largest component of all foreground", "classes": values,
                               "mean_dice_before": before, "mean_dice_after": after,
                               "kept": rules.largest_foreground_component})
    base = measured["a"] if rules.largest_foreground_component else baseline
    per_class = measured["ab"] if rules.largest_foreground_component else measured["b"]
    for value in values:
        kept = per_class[value] > base[value]
        if kept:
            rules.largest_component_labels.append(value)
        rules.measurements.append({"step": f"largest component of class {value} ({labels[value]})",
                                   "classes": [value], "mean_dice_before": base[value],
                                   "mean_dice_after": per_class[value], "kept": kept})
    final = [per_class[v] if v in rules.largest_component_labels else base[v] for v in values]
    rules.measurements.append({"step": "all kept steps", "classes": values, "mean_dice_before": before,
                               "mean_dice_after": float(np.mean(final)), "kept": not rules.is_identity})
    for line in rules.measurements:
        logger.info("post-processing: %-45s Dice %.4f -> %.4f: %s", line["step"], line["mean_dice_before"],
                    line["mean_dice_after"], "kept" if line["kept"] else "not kept")
    return rules
