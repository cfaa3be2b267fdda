"""What the choice produces for people: crossval.png (per-class Dice side by side) and
inference_instructions.md (the commands that reproduce the choice on new scans)."""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Sequence

from ..files import atomic_path

INPUT, OUTPUT = "INPUT_FOLDER", "OUTPUT_FOLDER"     # placeholders of the commands in the instructions


def plot_crossval(results: dict, path: Path) -> Path:
    """Grouped bars: per class, the mean Dice (with its standard deviation) of each entry."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    entries = results["entries"]
    names = list(entries)
    classes = list(next(iter(entries.values()))["classes"])
    width = 0.8 / max(1, len(names))
    figure, axes = plt.subplots(figsize=(max(6.0, 1.6 * len(classes) * max(1, len(names)) / 2 + 2), 4.5))
    positions = np.arange(len(classes) + 1)
    for index, name in enumerate(names):
        entry = entries[name]
        means = [entry["classes"][c]["dice"]["mean"] for c in classes] + [entry["foreground_mean"]["dice"]]
        spreads = [entry["classes"][c]["dice"]["std"] for c in classes] + [0.0]
        label = f"{name}{' (best)' if name == results['best'] else ''}"
        axes.bar(positions + (index - (len(names) - 1) / 2) * width, means, width, yerr=spreads, capsize=3,
                 label=label)
    axes.set_xticks(positions, classes + ["foreground mean"])
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("Dice (mean over validation cases, ± std)")
    axes.set_title(f"{results['dataset']}: cross-validation, folds {', '.join(map(str, results['folds']))}")
    axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=min(3, len(names)))  # below
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)
    plt.close(figure)
    return path


def _command(*words: str) -> str:
    return " ".join(shlex.quote(w) if w not in (INPUT, OUTPUT) and not w.startswith(OUTPUT) else w for w in words)


def predict_commands(results: dict) -> list[str]:
    """The shell commands that turn ``INPUT_FOLDER`` into the chosen entry's predictions in ``OUTPUT_FOLDER``."""
    best = results["entries"][results["best"]]
    folds = [str(f) for f in best["folds"]]
    measured = results.get("postprocessing") is not None     # else: predict as cross-validated, without any
    if best["kind"] == "configuration":
        return [_command("transseg_predict", "-i", INPUT, "-o", OUTPUT, "-m", best["model_folder"], "-f", *folds,
                         *(() if measured else ("--no_postprocessing",)))]
    members = results["entries"]
    commands, outputs = [], []
    for member in best["members"]:
        output = f"{OUTPUT}_{member}"
        outputs.append(output)
        commands.append(_command("transseg_predict", "-i", INPUT, "-o", output, "-m",
                                 members[member]["model_folder"], "-f", *folds, "--save_probabilities",
                                 "--no_postprocessing"))
    if not measured:
        return commands + [_command("transseg_ensemble", "-i", *outputs, "-o", OUTPUT)]
    ensembled = f"{OUTPUT}_ensemble"
    commands.append(_command("transseg_ensemble", "-i", *outputs, "-o", ensembled))
    commands.append(_command("transseg_apply_postprocessing", "-i", ensembled, "-o", OUTPUT, "-m",
                             best["model_folder"]))
    return commands


def _describe_postprocessing(results: dict) -> str:
    rules = results.get("postprocessing")
    if rules is None:
        return "Post-processing was not measured (--no_postprocessing)."
    steps = []
    if rules["largest_foreground_component"]:
        steps.append("keep only the largest connected component of all foreground")
    if rules["largest_component_labels"]:
        steps.append("keep only the largest component of label(s) "
                     + ", ".join(str(v) for v in rules["largest_component_labels"]))
    total = rules["measurements"][-1]
    measured = f"foreground mean Dice {total['mean_dice_before']:.4f} -> {total['mean_dice_after']:.4f}"
    if not steps:
        return f"No post-processing step raised the Dice of the classes it touches; none is applied ({measured})."
    return f"Post-processing: {'; then '.join(steps)} ({measured}); stored in `{results['postprocessing_file']}`."


def instructions_text(results: dict) -> str:
    best_name = results["best"]
    best = results["entries"][best_name]
    rows = [f"| {name} | {entry['kind']} | {', '.join(map(str, entry['folds']))} | {entry['num_cases']} | "
            f"{entry['foreground_mean']['dice']:.4f} | {entry['foreground_mean']['nsd']:.4f} |"
            for name, entry in results["entries"].items()]
    commands = "\n".join(f"    {c}" for c in predict_commands(results))
    what = (f"the configuration **{best_name}**" if best["kind"] == "configuration"
            else f"the ensemble **{best_name}** of {' and '.join(best['members'])}")
    missing = [f"{name}: fold(s) {', '.join(e['missing_folds'])} missing"
               for name, e in results["entries"].items() if e["missing_folds"]]
    lines = [
        f"# Inference instructions: {results['dataset']}",
        "",
        f"Written by `transseg_find_best_configuration`. Chosen: {what}, folds "
        f"{', '.join(map(str, best['folds']))}, by the foreground mean Dice of the cross-validation "
        f"({best['foreground_mean']['dice']:.4f} over {best['num_cases']} validation cases).",
        "",
        _describe_postprocessing(results),
        "",
        "## Predict new scans",
        "",
        f"Replace {INPUT} (images, as for training) and {OUTPUT}:",
        "",
        commands,
        "",
    ]
    if best["kind"] == "configuration" and results.get("postprocessing") is not None:
        lines += ["`transseg_predict` applies the model folder's `postprocessing.json` by default "
                  "(`--no_postprocessing` skips it).", ""]
    lines += ["## All entries", "",
              "| entry | kind | folds | cases | Dice (fg mean) | NSD (fg mean) |",
              "|---|---|---|---|---|---|", *rows, ""]
    if missing:
        lines += ["Missing folds (not in the figures): " + "; ".join(missing) + ".", ""]
    lines += ["Per-class figures: `crossval_results.json`; picture: `crossval.png`.", ""]
    return "\n".join(lines)


def write_instructions(results: dict, path: Path) -> Path:
    with atomic_path(path) as temporary:
        Path(temporary).write_text(instructions_text(results), encoding="utf-8")
    return path


__all__: Sequence[str] = ["plot_crossval", "predict_commands", "instructions_text", "write_instructions"]
