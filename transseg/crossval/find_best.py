"""``find_best_configuration``: from the folds of several configurations to one deployable decision.

Reads each configuration's fold validation results, scores every pair of configurations that kept
probabilities as an ensemble, picks the entry with the highest foreground mean Dice, measures
post-processing on its cross-validation predictions, and writes into
``$TRANSSEG_results/DatasetXXX_Name/``: ``crossval_results.json``, ``crossval.png`` and
``inference_instructions.md`` (``postprocessing.json`` goes into the chosen entry's model folder;
ensembles live in ``ensembles/<name>/``).
"""
from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Optional, Sequence, Union

from ..evaluation import evaluate_folder
from ..files import load_json, save_json
from ..paths import TranssegError, find_dataset_folder, get_root
from ..postprocessing import save_postprocessing
from .ensemble import ensemble_folders
from .postprocessing_choice import choose_postprocessing
from .report import plot_crossval, write_instructions
from .results import SUMMARY_FILE, Entry, FoldResult, collect_configuration, entry_figures, fold_validation_folder

logger = logging.getLogger(__name__)
PathLike = Optional[Union[str, Path]]
RESULTS_FILE = "crossval_results.json"
PLOT_FILE = "crossval.png"
INSTRUCTIONS_FILE = "inference_instructions.md"
ENSEMBLES_FOLDER = "ensembles"


def ensemble_name(members: Sequence[str]) -> str:
    return "ensemble__" + "__".join(members)


def _default_folds(model_folder: Path) -> list[int]:
    plans = model_folder / "plans.json"
    num_folds = load_json(plans)["training"]["num_folds"] if plans.is_file() else 5
    return list(range(int(num_folds)))


def score_ensemble(members: Sequence[Entry], dataset_folder: Path, num_processes: int = 1) -> Optional[Entry]:
    """The members' mean-probability ensemble on every fold they share with probabilities; None if none."""
    name = ensemble_name([m.name for m in members])
    folder = dataset_folder / ENSEMBLES_FOLDER / name
    entry = Entry(name, "ensemble", folder, [m.name for m in members])
    for fold in sorted(set.intersection(*(set(m.folds) for m in members))):
        results = [m.folds[fold] for m in members]
        lacking = [m.name for m, r in zip(members, results) if not r.has_probabilities()]
        if lacking:
            entry.missing_folds[fold] = f"no probabilities (CASE.npz) from {', '.join(lacking)}; train with --npz"
            continue
        cases = results[0].cases
        if any(r.cases != cases for r in results[1:]):
            entry.missing_folds[fold] = "the members validated different cases in this fold"
            continue
        output = fold_validation_folder(folder, fold)
        logger.info("Ensemble %s, fold %d: %d case(s)", name, fold, len(cases))
        ensemble_folders([r.folder for r in results], output, cases)
        summary = evaluate_folder(results[0].reference(cases[0]).parent, output, _labels(results[0]),
                                  output / SUMMARY_FILE, num_processes, cases=cases)
        entry.folds[fold] = FoldResult(fold, output, summary)
    for fold in sorted(set().union(*(set(m.folds) | set(m.missing_folds) for m in members)) - set(entry.folds)):
        entry.missing_folds.setdefault(fold, "not validated by every member")
    if not entry.folds:
        logger.info("Ensemble %s not scored: %s", name, "; ".join(f"fold {f}: {why}"
                                                                  for f, why in sorted(entry.missing_folds.items())))
        return None
    save_json({"members": [str(m.model_folder) for m in members], "folds": sorted(entry.folds)},
              folder / "ensemble.json")
    return entry


def _labels(result: FoldResult) -> dict[int, str]:
    return {int(value): name for value, name in result.summary["labels"].items()}


def find_best_configuration(dataset: Union[str, int], plans_names: Sequence[str] = ("plans",),
                            folds: Optional[Sequence[int]] = None, results_root: PathLike = None,
                            ensembles: bool = True, postprocessing: bool = True, num_processes: int = 1) -> dict:
    """Compare the configurations (and their pairwise ensembles), choose, and write the results; returns them."""
    results_folder = get_root("results", results_root)
    dataset_folder = find_dataset_folder(dataset, results_folder)
    if len(set(plans_names)) != len(plans_names):
        raise TranssegError(f"configuration(s) named twice: {list(plans_names)}.")
    folds = list(folds) if folds is not None else _default_folds(dataset_folder / plans_names[0])
    entries = [collect_configuration(dataset_folder / name, name, folds) for name in plans_names]
    if ensembles:
        for pair in itertools.combinations(entries[:len(plans_names)], 2):
            ensemble = score_ensemble(pair, dataset_folder, num_processes)
            if ensemble is not None:
                entries.append(ensemble)
    figures = {entry.name: entry_figures(entry) for entry in entries}
    for name, entry in figures.items():
        logger.info("%-40s folds %-12s %3d cases  foreground mean Dice %.4f  NSD %.4f", name,
                    ",".join(map(str, entry["folds"])), entry["num_cases"], entry["foreground_mean"]["dice"],
                    entry["foreground_mean"]["nsd"])
    best = max(figures, key=lambda name: figures[name]["foreground_mean"]["dice"])   # first of equals wins
    logger.info("Best: %s (foreground mean Dice %.4f)", best, figures[best]["foreground_mean"]["dice"])
    results = {"dataset": dataset_folder.name, "folds": folds, "chosen_by": "foreground mean Dice",
               "best": best, "entries": figures}
    chosen = next(e for e in entries if e.name == best)
    if postprocessing:
        rules = choose_postprocessing(chosen, num_processes)
        results["postprocessing"] = rules.to_dict()
        results["postprocessing_file"] = str(save_postprocessing(rules, chosen.model_folder))
    save_json(results, dataset_folder / RESULTS_FILE)
    plot_crossval(results, dataset_folder / PLOT_FILE)
    write_instructions(results, dataset_folder / INSTRUCTIONS_FILE)
    logger.info("Wrote %s, %s and %s in %s", RESULTS_FILE, PLOT_FILE, INSTRUCTIONS_FILE, dataset_folder)
    return results
