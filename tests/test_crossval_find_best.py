"""From folds to a decision, end to end: 2 configurations x 2 folds of the example task (vit_tiny, 64 px, CPU, --npz),
then transseg_find_best_configuration; its figures are checked against fold summaries scored here."""
import copy
import json
import shlex
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import root_flags, train_arguments
from transseg.cli.apply_postprocessing import main as apply_postprocessing
from transseg.cli.ensemble import main as ensemble
from transseg.cli.find_best_configuration import main as find_best
from transseg.cli.plan_and_preprocess import main as plan_and_preprocess
from transseg.cli.plan_experiment import main as plan_experiment
from transseg.cli.predict import main as predict
from transseg.cli.train import main as train
from transseg.crossval.ensemble import read_probabilities
from transseg.crossval.report import predict_commands
from transseg.crossval.results import collect_configuration, entry_figures
from transseg.evaluation import evaluate_folder
from transseg.example import ExampleSettings, make_example_task
from transseg.inference.in_memory import Predictor
from transseg.io import read_label
from transseg.postprocessing import PostprocessingRules, save_postprocessing
from transseg.postprocessing import apply_postprocessing as apply_rules
from transseg.preprocessing import export_segmentation

PLANNER = ["--backbone", "vit_tiny_patch16_224", "--min_resolution", "64", "--no_pretrained"]
CONFIGURATIONS = ("plans", "plans_k1")
FOLDS = (0, 1)
COMMANDS = {"transseg_predict": predict, "transseg_ensemble": ensemble,
            "transseg_apply_postprocessing": apply_postprocessing}


@pytest.fixture(scope="module")
def crossval(tmp_path_factory):
    base = tmp_path_factory.mktemp("crossval")
    roots = {kind: base / kind for kind in ("raw", "preprocessed", "results")}
    task = make_example_task(roots["raw"], ExampleSettings(task_id=99, num_training=6, num_test=2))
    assert plan_and_preprocess(["-d", "99", "-np", "1", *PLANNER, *root_flags(roots, "raw", "preprocessed")]) == 0
    assert plan_experiment(["-d", "99", "--plans_name", "plans_k1", "--slices", "1", *PLANNER,
                            *root_flags(roots, "raw", "preprocessed")]) == 0
    for plans in CONFIGURATIONS:
        for fold in FOLDS:
            assert train(["99", str(fold), "--plans_name", plans, "--npz",
                          *train_arguments(6, "--val_every", "1000"),
                          *root_flags(roots, "raw", "preprocessed", "results")]) == 0
    assert find_best(["-d", "99", "-p", *CONFIGURATIONS, "-f", *map(str, FOLDS), "-np", "1",
                      *root_flags(roots, "results")]) == 0
    dataset = roots["results"] / "Dataset099_Example"
    return roots, task, dataset, json.loads((dataset / "crossval_results.json").read_text())


def _pooled_fold_summaries(roots, plans: str) -> dict:
    """Per-class means over the validation cases of both folds, scored here from the files (not read from the run)."""
    splits = json.loads((roots["preprocessed"] / "Dataset099_Example" / "splits_final.json").read_text())
    references = roots["preprocessed"] / "Dataset099_Example" / "gt_segmentations"
    per_case = {}
    for fold in FOLDS:
        folder = roots["results"] / "Dataset099_Example" / plans / f"fold_{fold}" / "validation"
        summary = evaluate_folder(references, folder, {1: "organ", 2: "lesion"}, cases=splits[fold]["val"])
        per_case.update(summary["cases"])
    return per_case


def test_results_match_the_fold_summaries_scored_independently(crossval):
    roots, _, _, results = crossval
    assert results["folds"] == list(FOLDS)
    for plans in CONFIGURATIONS:
        entry = results["entries"][plans]
        per_case = _pooled_fold_summaries(roots, plans)
        assert entry["folds"] == list(FOLDS) and entry["missing_folds"] == {}
        assert sorted(per_case) == entry["cases"] and entry["num_cases"] == 3
        for key in ("1_organ", "2_lesion"):
            for metric in ("dice", "iou", "hd95", "nsd"):
                values = [per_case[case]["metrics"][key][metric] for case in sorted(per_case)]
                assert entry["classes"][key][metric]["mean"] == pytest.approx(np.mean(values), abs=1e-12)
                assert entry["classes"][key][metric]["std"] == pytest.approx(np.std(values), abs=1e-12)
        assert entry["foreground_mean"]["dice"] == pytest.approx(
            np.mean([entry["classes"][k]["dice"]["mean"] for k in ("1_organ", "2_lesion")]))
    best = max(results["entries"], key=lambda name: results["entries"][name]["foreground_mean"]["dice"])
    assert results["best"] == best


def test_the_ensemble_is_the_mean_of_the_probabilities(crossval):
    _, _, dataset, results = crossval
    entry = results["entries"]["ensemble__plans__plans_k1"]
    assert entry["kind"] == "ensemble" and entry["members"] == list(CONFIGURATIONS) and entry["folds"] == list(FOLDS)
    assert entry["cases"] == results["entries"]["plans"]["cases"]
    case = entry["cases"][0]
    fold = next(f for f in FOLDS if (dataset / "plans" / f"fold_{f}" / "validation" / f"{case}.npz").is_file())
    members = [read_probabilities(dataset / p / f"fold_{fold}" / "validation" / f"{case}.npz") for p in CONFIGURATIONS]
    mean = (members[0][0].astype(np.float32) + members[1][0].astype(np.float32)) / 2
    expected = read_label(export_segmentation(mean, members[0][1], dataset / "expected.nii.gz"))[0]
    ensembled = read_label(dataset / "ensembles" / "ensemble__plans__plans_k1" / f"fold_{fold}" / "validation"
                           / f"{case}.nii.gz")[0]
    assert np.mean(expected == ensembled) > 0.999          # same grid: resampling each then averaging == the mean's
    assert not np.array_equal(np.asarray(members[0][0]), np.asarray(members[1][0]))   # two different models


def test_plot_postprocessing_and_instructions_are_written(crossval):
    _, _, dataset, results = crossval
    assert (dataset / "crossval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = results["entries"][results["best"]]
    rules = json.loads((dataset.parent / best["model_folder"] / "postprocessing.json").read_text())
    assert rules == results["postprocessing"] and rules["chosen_for"] == results["best"]
    text = (dataset / "inference_instructions.md").read_text()
    assert results["best"] in text and "transseg_predict" in text


def test_the_instructions_name_commands_that_run(crossval, tmp_path):
    _, task, dataset, _ = crossval
    commands = [line.strip() for line in (dataset / "inference_instructions.md").read_text().splitlines()
                if line.startswith("    transseg_")]
    assert commands and commands[0].startswith("transseg_predict")
    output = tmp_path / "predictions"
    for command in commands:
        words = shlex.split(command.replace("INPUT_FOLDER", str(task / "imagesTs"))
                            .replace("OUTPUT_FOLDER", str(output)))
        assert COMMANDS[words[0]](words[1:]) == 0, command
    written = sorted(p.name for p in output.iterdir() if p.name.endswith(".nii.gz"))
    assert written == sorted(p.name for p in (task / "imagesTs").iterdir())


def test_a_missing_fold_is_named_and_an_untrained_configuration_is_one_message(crossval, capsys):
    roots, _, dataset, _ = crossval
    entry = collect_configuration(dataset / "plans", "plans", [0, 1, 2])
    figures = entry_figures(entry)
    assert figures["folds"] == [0, 1] and list(figures["missing_folds"]) == ["2"]
    assert "fold_2 does not exist" in figures["missing_folds"]["2"]
    assert figures["cases"] == crossval[3]["entries"]["plans"]["cases"]
    assert find_best(["-d", "99", "-p", "plans", "plans_k5", *root_flags(roots, "results")]) == 1
    error = capsys.readouterr().err
    assert "plans_k5" in error and "transseg_train DATASET FOLD --plans_name plans_k5" in error


def _copy_model(dataset, target):
    """The 'plans' configuration's final checkpoints (both folds), plans and dataset.json: a model folder of our own."""
    shutil.copytree(dataset / "plans", target, ignore=shutil.ignore_patterns(
        "validation", "*.png", "checkpoint_latest.pt", "checkpoint_best.pt", "postprocessing.json", "*.jsonl", "*.txt"))
    return target


def test_prediction_applies_postprocessing_json_unless_told_not_to(crossval, tmp_path):
    _, task, dataset, _ = crossval
    model = _copy_model(dataset, tmp_path / "model")
    rules = PostprocessingRules(largest_foreground_component=True, largest_component_labels=[1, 2])
    save_postprocessing(rules, model)
    flags = ["-i", str(task / "imagesTs"), "-m", str(model), "--device", "cpu", "-npp", "0"]
    assert predict([*flags, "-o", str(tmp_path / "applied")]) == 0
    assert predict([*flags, "-o", str(tmp_path / "raw"), "--no_postprocessing"]) == 0
    changed = 0
    for path in sorted((tmp_path / "raw").glob("*.nii.gz")):
        raw, geometry = read_label(path)
        applied = read_label(tmp_path / "applied" / path.name)[0]
        assert np.array_equal(applied, apply_rules(raw, rules)), path.name
        changed += not np.array_equal(applied, raw)
    assert changed >= 1                  # a 6-step model leaves stray components: the rules had work to do
    image = sitk.ReadImage(str(sorted((task / "imagesTs").glob("*.nii.gz"))[0]))
    name = sorted((task / "imagesTs").glob("*.nii.gz"))[0].name
    in_memory = Predictor.from_model_folder(model, device="cpu")         # the settings transseg_predict used
    assert np.array_equal(sitk.GetArrayFromImage(in_memory.predict_image(image)),
                          read_label(tmp_path / "applied" / name)[0])
    without = Predictor.from_model_folder(model, device="cpu", postprocessing=False)
    assert np.array_equal(sitk.GetArrayFromImage(without.predict_image(image)), read_label(tmp_path / "raw" / name)[0])


def test_an_ensemble_chosen_as_best_deploys_with_the_commands_it_names(crossval, tmp_path):
    """The ensemble branch of the instructions, run for real: predict each member, ensemble, post-process."""
    _, task, dataset, results = crossval
    forced = copy.deepcopy(results)
    forced["best"] = "ensemble__plans__plans_k1"
    save_postprocessing(PostprocessingRules(largest_component_labels=[1]), tmp_path / "ensemble")
    forced["entries"]["ensemble__plans__plans_k1"]["model_folder"] = str(tmp_path / "ensemble")
    forced["postprocessing"] = PostprocessingRules(largest_component_labels=[1], measurements=[
        {"step": "all kept steps", "mean_dice_before": 0.1, "mean_dice_after": 0.2, "kept": True}]).to_dict()
    forced["postprocessing_file"] = str(tmp_path / "ensemble" / "postprocessing.json")
    commands = predict_commands(forced)
    assert [c.split()[0] for c in commands] == ["transseg_predict", "transseg_predict", "transseg_ensemble",
                                                "transseg_apply_postprocessing"]
    output = tmp_path / "predictions"
    for command in commands:
        words = shlex.split(command.replace("INPUT_FOLDER", str(task / "imagesTs"))
                            .replace("OUTPUT_FOLDER", str(output)))
        assert COMMANDS[words[0]](words[1:]) == 0, command
    cases = sorted(p.name for p in (task / "imagesTs").iterdir())
    assert sorted(p.name for p in output.glob("*.nii.gz")) == cases
    members = [read_probabilities(tmp_path / f"predictions_{m}" / cases[0].replace(".nii.gz", ".npz"))
               for m in CONFIGURATIONS]
    mean = (members[0][0].astype(np.float32) + members[1][0].astype(np.float32)) / 2
    expected = apply_rules(read_label(export_segmentation(mean, members[0][1], tmp_path / "e.nii.gz"))[0],
                                    PostprocessingRules(largest_component_labels=[1]))
    assert np.mean(read_label(output / cases[0])[0] == expected) > 0.999
