"""Bad input across every stage, as a new user meets it through the commands.

Each case corrupts a fresh example task (or a copy of the trained example model), runs the command,
and asserts: a non-zero exit, one message naming the file or field, no traceback, and no output left
that looks valid. (More planning and preprocessing cases: test_bad_input_planning.py.)
"""
from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from transseg.cli.evaluate import main as evaluate_main
from transseg.cli.plan_and_preprocess import main as plan_and_preprocess_main
from transseg.cli.predict import main as predict_main
from transseg.cli.preprocess import main as preprocess_main
from transseg.cli.train import main as train_main
from transseg.preprocessing import list_cases

TINY = ["--backbone", "vit_tiny_patch16_224", "--min_resolution", "64", "-np", "1", "--no_pretrained"]
DATASET = "Dataset099_Example"


def run(main, argv, capsys) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code != 0, f"exit status 0 for bad input: {err}"
    assert "Traceback" not in err, err
    return err


def meta(task: Path) -> dict:
    return json.loads((task / "dataset.json").read_text())


def write_meta(task: Path, data: dict) -> None:
    (task / "dataset.json").write_text(json.dumps(data))


def nothing_preprocessed(roots) -> None:
    assert not [p for p in roots["preprocessed"].rglob("*") if p.is_file() and p.suffix in (".json", ".npz")]


def rewrite(path: Path, array: np.ndarray, like: sitk.Image, spacing=None) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetOrigin(like.GetOrigin())
    image.SetDirection(like.GetDirection())
    image.SetSpacing(spacing or like.GetSpacing())
    sitk.WriteImage(image, str(path), useCompression=True)


def first_pair(task: Path) -> tuple[Path, Path]:
    entry = meta(task)["training"][0]
    return task / entry["image"], task / entry["label"]


# ----------------------------------------------------------------------------------------- raw data
def test_missing_dataset_json(ct_task, roots, capsys):
    (ct_task / "dataset.json").unlink()
    err = run(plan_and_preprocess_main, ["-d", "99", *TINY], capsys)
    assert f"{ct_task / 'dataset.json'}: file not found" in err
    nothing_preprocessed(roots)


def test_dataset_json_that_is_not_json(ct_task, roots, capsys):
    (ct_task / "dataset.json").write_text('{"name": "Example", "modality": {"0": "CT"},')
    err = run(plan_and_preprocess_main, ["-d", "99", *TINY], capsys)
    assert f"{ct_task / 'dataset.json'}: not valid JSON" in err
    nothing_preprocessed(roots)


def test_a_listed_file_that_does_not_exist(ct_task, roots, capsys):
    image, _ = first_pair(ct_task)
    image.unlink()
    err = run(plan_and_preprocess_main, ["-d", "99", *TINY], capsys)
    assert f"{image}: file not found" in err
    nothing_preprocessed(roots)


def test_a_truncated_nii_gz(ct_task, roots, capsys):
    image, _ = first_pair(ct_task)
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 3])
    err = run(plan_and_preprocess_main, ["-d", "99", *TINY], capsys)
    assert str(image) in err and "truncated" in err
    nothing_preprocessed(roots)


@pytest.mark.parametrize("defect,words", [("shape", "shape"), ("spacing", "spacing")])
def test_image_and_label_on_different_grids(ct_task, roots, capsys, defect, words):
    image, label = first_pair(ct_task)
    reference = sitk.ReadImage(str(label))
    array = sitk.GetArrayFromImage(reference)
    if defect == "shape":
        rewrite(label, array[:, :-3], reference)
    else:
        rewrite(label, array, reference, spacing=tuple(s * 1.5 for s in reference.GetSpacing()))
    err = run(plan_and_preprocess_main, ["-d", "99", *TINY], capsys)
    assert str(label) in err and "label grid differs from its image" in err and words in err
    nothing_preprocessed(roots)


def test_undeclared_label_values(ct_task, roots, capsys):
    _, label = first_pair(ct_task)
    reference = sitk.ReadImage(str(label))
    array = sitk.GetArrayFromImage(reference)
    array[0, 0, :3] = 7
    rewrite(label, array, reference)
    err = run(plan_and_preprocess_main, ["-d", "99", *TINY], capsys)
    assert str(label) in err and "label value(s) [7] are not declared in dataset.json" in err
    assert "example_000" not in list_cases(roots["preprocessed"] / DATASET / "plans")


def test_nan_in_an_nrrd_image(ct_task, roots, capsys):
    image, _ = first_pair(ct_task)
    reference = sitk.ReadImage(str(image))
    array = sitk.GetArrayFromImage(reference).astype(np.float32)
    array[2, 10, 10:14] = np.nan
    nrrd = image.with_name("example_000.nrrd")
    rewrite(nrrd, array, reference)
    data = meta(ct_task)
    data["training"][0]["image"] = "./imagesTr/example_000.nrrd"
    write_meta(ct_task, data)
    err = run(plan_and_preprocess_main, ["-d", "99", *TINY], capsys)
    assert f"{nrrd}: 4 NaN/Inf voxel(s)" in err
    nothing_preprocessed(roots)


def test_a_2d_image(ct_task, roots, capsys):
    image, _ = first_pair(ct_task)
    flat = sitk.GetImageFromArray(np.zeros((40, 48), np.int16))
    sitk.WriteImage(flat, str(image))
    err = run(plan_and_preprocess_main, ["-d", "99", *TINY], capsys)
    assert f"{image}: 2D images are not supported" in err
    nothing_preprocessed(roots)


def test_a_4d_image_whose_channels_disagree_with_modality(mr_task, roots, capsys):
    data = meta(mr_task)
    data["modality"] = {"0": "T2", "1": "ADC", "2": "DWI"}
    write_meta(mr_task, data)
    err = run(plan_and_preprocess_main, ["-d", "98", *TINY, "--verify_dataset_integrity"], capsys)
    assert "2 image channel" in err and "declares 3" in err and "examplemr_000" in err
    nothing_preprocessed(roots)


def test_a_path_escaping_the_dataset_folder(ct_task, roots, capsys):
    data = meta(ct_task)
    data["training"][1]["image"] = "../../etc/passwd"
    write_meta(ct_task, data)
    err = run(plan_and_preprocess_main, ["-d", "99", *TINY], capsys)
    assert "'../../etc/passwd' points outside the dataset folder" in err and "dataset.json" in err
    nothing_preprocessed(roots)


def test_an_unknown_dataset_id(ct_task, roots, capsys):
    err = run(plan_and_preprocess_main, ["-d", "55", *TINY], capsys)
    assert "No dataset '55'" in err and "Task99_Example" in err
    nothing_preprocessed(roots)


def test_an_unknown_backbone_name(ct_task, roots, capsys):
    arguments = ["-d", "99", "-np", "1", "--min_resolution", "64", "--backbone", "vit_tiny_patch16_nosuchnet"]
    err = run(plan_and_preprocess_main, arguments, capsys)
    assert "vit_tiny_patch16_nosuchnet" in err
    nothing_preprocessed(roots)


# ----------------------------------------------------------------------------------------- plans and training
def test_plans_edited_into_an_invalid_value(ct_task, roots, capsys):
    assert plan_and_preprocess_main(["-d", "99", *TINY, "--no_preprocessing"]) == 0
    plans_file = roots["preprocessed"] / DATASET / "plans.json"
    plans = json.loads(plans_file.read_text())
    plans["data"]["window_slices"] = "five"
    plans_file.write_text(json.dumps(plans))
    err = run(preprocess_main, ["-d", "99", "-np", "1"], capsys)
    assert f"{plans_file}: data.window_slices: expected an odd int >= 1, got \"five\"" in err
    assert not (roots["preprocessed"] / DATASET / "plans").exists() or not list_cases(roots["preprocessed"] / DATASET / "plans")
    err = run(train_main, ["99", "0", "--device", "cpu"], capsys)
    assert "data.window_slices" in err
    assert not list(roots["results"].rglob("*.pt"))


def test_a_training_override_of_an_unknown_field(trained_example, tmp_path, capsys):
    err = run(train_main, ["99", "1", "--device", "cpu", "--set", "training.learnin_rate=1e-4",
                           "--preprocessed_root", str(trained_example.roots["preprocessed"]),
                           "--results_root", str(tmp_path)], capsys)
    assert "no field 'learnin_rate' in 'training'" in err
    assert not list(tmp_path.rglob("*.pt"))


def _model_copy(trained_example, tmp_path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(trained_example.model_folder, folder, ignore=shutil.ignore_patterns("validation", "*.png",
                                                                                         "checkpoint_best.pt",
                                                                                         "checkpoint_latest.pt"))
    return folder


def test_a_checkpoint_of_other_plans(trained_example, tmp_path, capsys):
    folder = _model_copy(trained_example, tmp_path)
    plans = json.loads((folder / "plans.json").read_text())
    plans["data"]["data_interpolation"] = "cubic"                 # other plans: the stored cases would differ
    (folder / "plans.json").write_text(json.dumps(plans))
    err = run(predict_main, ["-i", str(trained_example.task / "imagesTs"), "-o", str(tmp_path / "out"), "-m",
                             str(folder), "--device", "cpu"], capsys)
    assert f"{folder / 'fold_0' / 'checkpoint_final.pt'}: this checkpoint belongs to dataset {DATASET}" in err
    assert "but this run uses" in err
    assert not (tmp_path / "out").exists()


def test_a_truncated_checkpoint(trained_example, tmp_path, capsys):
    folder = _model_copy(trained_example, tmp_path)
    checkpoint = folder / "fold_0" / "checkpoint_final.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    err = run(predict_main, ["-i", str(trained_example.task / "imagesTs"), "-o", str(tmp_path / "out"), "-m",
                             str(folder), "--device", "cpu"], capsys)
    assert f"{checkpoint}: truncated or damaged checkpoint" in err
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------- prediction and evaluation
def test_a_prediction_input_folder_without_images(trained_example, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    err = run(predict_main, ["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m",
                             str(trained_example.model_folder)], capsys)
    assert f"{tmp_path / 'in'}: no images to predict" in err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_an_unwritable_output_folder(trained_example, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("a file where a folder should be")
    err = run(predict_main, ["-i", str(trained_example.task / "imagesTs"), "-o", str(blocker / "preds"), "-m",
                             str(trained_example.model_folder), "--device", "cpu"], capsys)
    assert str(blocker) in err
    assert blocker.read_text() == "a file where a folder should be"


def test_evaluating_predictions_on_another_grid(trained_example, tmp_path, capsys):
    predictions = tmp_path / "preds"
    predictions.mkdir()
    for label in sorted((trained_example.task / "labelsTs").glob("*.nii.gz")):
        image = sitk.ReadImage(str(label))
        image.SetSpacing(tuple(s * 2 for s in image.GetSpacing()))
        sitk.WriteImage(image, str(predictions / label.name))
    err = run(evaluate_main, ["-ref", str(trained_example.task / "labelsTs"), "-pred", str(predictions)], capsys)
    assert "spacing" in err and "example_" in err
    assert not (predictions / "summary.json").exists()


def _limited_run(command: list[str], limit_bytes: int) -> subprocess.CompletedProcess:
    """Run a command whose files may not grow past ``limit_bytes``: a write beyond fails as on a full disk."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return subprocess.run(command, capture_output=True, text=True, preexec_fn=limit)


def test_a_full_disk_during_preprocessing_leaves_no_case_half_written(ct_task, roots):
    assert plan_and_preprocess_main(["-d", "99", *TINY, "--no_preprocessing"]) == 0
    result = _limited_run([sys.executable, "-m", "transseg.cli.preprocess", "-d", "99", "-np", "1"], 20_000)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "File too large" in result.stderr and "example_000" in result.stderr
    folder = roots["preprocessed"] / DATASET / "plans"
    assert list_cases(folder) == [] and not list(folder.glob("*.npz")) and not list(folder.glob(".tmp-*"))


def test_a_full_disk_during_prediction_leaves_no_file_half_written(trained_example, tmp_path):
    output = tmp_path / "out"
    result = _limited_run([sys.executable, "-m", "transseg.cli.predict", "-i", str(trained_example.task / "imagesTs"),
                           "-o", str(output), "-m", str(trained_example.model_folder), "--device", "cpu",
                           "--save_probabilities"], 50_000)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "prediction failed for 3 of 3 case(s)" in result.stderr and "File too large" in result.stderr
    assert output.is_dir() and list(output.iterdir()) == []
