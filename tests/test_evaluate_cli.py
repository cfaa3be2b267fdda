"""transseg_evaluate and evaluate_folder: summary.json, matching, labels, errors, overlays."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from transseg.cli.evaluate import main
from transseg.evaluation import evaluate_folder
from transseg.io import Geometry, read_label, write_image
from transseg.paths import TranssegError

GEOMETRY = Geometry(spacing=(1.0, 1.0, 2.5), origin=(10.0, -5.0, 3.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1),
                    size=(8, 7, 6), pixel_type="uint8")


def cube_label(value: int, z: int, shape=(6, 7, 8)) -> np.ndarray:
    label = np.zeros(shape, np.uint8)
    label[z:z + 3, 2:5, 2:5] = value
    return label


def write_pair(tmp_path: Path, case: str, reference: np.ndarray, prediction: np.ndarray,
               prediction_geometry: Geometry = GEOMETRY) -> None:
    write_image(reference, GEOMETRY, tmp_path / "ref" / f"{case}.nii.gz")
    write_image(prediction, prediction_geometry, tmp_path / "pred" / f"{case}.nii.gz")


@pytest.fixture
def folders(tmp_path):
    """case_a: label 1 shifted one slice (Dice 2/3); case_b: label 1 perfect, label 2 missed."""
    write_pair(tmp_path, "case_a", cube_label(1, 0), cube_label(1, 1))
    reference_b = cube_label(1, 0)
    reference_b[5, 0, 0] = 2
    write_pair(tmp_path, "case_b", reference_b, cube_label(1, 0))
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "dataset.json").write_text(json.dumps({
        "name": "T", "modality": {"0": "CT"}, "training": [],
        "labels": {"0": "background", "1": "liver", "2": "tumour", "3": "spleen"}}))
    return tmp_path


def test_summary_structure_and_values(folders, capsys):
    assert main(["-ref", str(folders / "ref"), "-pred", str(folders / "pred"), "-d", str(folders / "dataset"),
                 "-np", "1"]) == 0
    summary = json.loads((folders / "pred" / "summary.json").read_text())
    assert summary["labels"] == {"1": "liver", "2": "tumour", "3": "spleen"}
    assert summary["num_cases"] == 2 and sorted(summary["cases"]) == ["case_a", "case_b"]
    assert summary["tolerance_mm"] == 2.0
    case_a = summary["cases"]["case_a"]
    assert case_a["reference"].endswith("case_a.nii.gz") and case_a["prediction"].endswith("case_a.nii.gz")
    liver_a = case_a["metrics"]["1_liver"]
    assert liver_a["dice"] == pytest.approx(2 / 3) and liver_a["iou"] == pytest.approx(0.5)
    assert liver_a["hd95"] == pytest.approx(2.5) and liver_a["nsd"] == pytest.approx(34 / 52)
    tumour_b = summary["cases"]["case_b"]["metrics"]["2_tumour"]
    diagonal = math.sqrt(8 ** 2 + 7 ** 2 + (6 * 2.5) ** 2)
    assert (tumour_b["dice"], tumour_b["nsd"]) == (0.0, 0.0) and tumour_b["hd95"] == pytest.approx(diagonal)
    spleen = summary["mean"]["3_spleen"]           # absent everywhere: both-empty convention in every case
    assert (spleen["dice"], spleen["hd95"], spleen["cases_with_reference"]) == (1.0, 0.0, 0)
    liver = summary["mean"]["1_liver"]
    assert liver["dice"] == pytest.approx((2 / 3 + 1) / 2) and liver["cases_with_prediction"] == 2
    tumour = summary["mean"]["2_tumour"]
    assert tumour["dice"] == pytest.approx(0.5) and tumour["hd95"] == pytest.approx(diagonal / 2)
    for metric in ("dice", "iou", "hd95", "nsd"):
        expected = np.mean([summary["mean"][key][metric] for key in ("1_liver", "2_tumour", "3_spleen")])
        assert summary["foreground_mean"][metric] == pytest.approx(expected)
    assert "foreground mean" in capsys.readouterr().err


def test_labels_from_the_reference_files_and_an_output_elsewhere(folders):
    output = folders / "elsewhere" / "scores.json"
    assert main(["-ref", str(folders / "ref"), "-pred", str(folders / "pred"), "-o", str(output), "-np", "1"]) == 0
    summary = json.loads(output.read_text())
    assert summary["labels"] == {"1": "label1", "2": "label2"}
    assert not (folders / "pred" / "summary.json").exists()
    assert summary["cases"]["case_a"]["metrics"]["2_label2"]["dice"] == 1.0     # both empty in case_a


def test_parallel_gives_the_same_summary(folders):
    one = evaluate_folder(folders / "ref", folders / "pred", {1: "liver", 2: "tumour"}, num_processes=1)
    two = evaluate_folder(folders / "ref", folders / "pred", {1: "liver", 2: "tumour"}, num_processes=2)
    assert one == two


def test_geometry_mismatch_names_both_files_and_writes_nothing(tmp_path, capsys):
    shifted = Geometry.from_dict({**GEOMETRY.to_dict(), "spacing": [1.0, 1.0, 3.0]})
    write_pair(tmp_path, "case_a", cube_label(1, 0), cube_label(1, 0))
    write_pair(tmp_path, "case_b", cube_label(1, 0), cube_label(1, 0), prediction_geometry=shifted)
    assert main(["-ref", str(tmp_path / "ref"), "-pred", str(tmp_path / "pred"), "-np", "1"]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / "pred" / "case_b.nii.gz") in err and str(tmp_path / "ref" / "case_b.nii.gz") in err
    assert "spacing" in err and "Traceback" not in err
    assert not (tmp_path / "pred" / "summary.json").exists()
    assert not list((tmp_path / "pred").glob(".tmp-*"))


def test_missing_predictions_are_listed(folders, capsys):
    (folders / "pred" / "case_b.nii.gz").unlink()
    write_image(cube_label(1, 0), GEOMETRY, folders / "ref" / "case_c.nii.gz")
    assert main(["-ref", str(folders / "ref"), "-pred", str(folders / "pred"), "-np", "1"]) == 1
    err = capsys.readouterr().err
    assert "2 of 3 reference case(s) have no prediction: case_b, case_c" in err
    assert not (folders / "pred" / "summary.json").exists()


def test_extra_predictions_are_ignored_with_a_warning(folders, capsys):
    write_image(cube_label(1, 0), GEOMETRY, folders / "pred" / "stray.nii.gz")
    (folders / "pred" / "notes.txt").write_text("not an image")
    assert main(["-ref", str(folders / "ref"), "-pred", str(folders / "pred"), "-np", "1"]) == 0
    assert "1 prediction(s) without a reference" in capsys.readouterr().err
    assert "stray" not in json.loads((folders / "pred" / "summary.json").read_text())["cases"]
    # a rerun on the same folder: summary.json and overlays/ there are not taken for predictions
    assert main(["-ref", str(folders / "ref"), "-pred", str(folders / "pred"), "-np", "1", "--overlays"]) == 0


def test_values_outside_the_declared_labels_are_reported(folders, capsys):
    prediction, geometry = read_label(folders / "pred" / "case_a.nii.gz")
    prediction[0, 0, 0] = 9
    write_image(prediction, geometry, folders / "pred" / "case_a.nii.gz")
    assert main(["-ref", str(folders / "ref"), "-pred", str(folders / "pred"), "-d",
                 str(folders / "dataset" / "dataset.json"), "-np", "1"]) == 0
    err = capsys.readouterr().err
    assert "case_a.nii.gz: label value(s) [9] not among the evaluated labels" in err


@pytest.mark.parametrize("arguments,message", [
    (["--tolerance", "-1"], "tolerance"),
    (["-d", "nowhere/dataset.json"], "nowhere/dataset.json: not found"),
    (["-d", "3"], "TRANSSEG_raw is not set"),
    (["--overlays", "--images", "IMAGES"], "no image (CASE.nii.gz or CASE_0000.nii.gz) for 2 case(s)"),
])
def test_user_errors_exit_1_with_one_message(folders, capsys, monkeypatch, arguments, message):
    monkeypatch.delenv("TRANSSEG_raw", raising=False)
    (folders / "images").mkdir()
    arguments = [str(folders / "images") if a == "IMAGES" else a for a in arguments]
    assert main(["-ref", str(folders / "ref"), "-pred", str(folders / "pred"), "-np", "1", *arguments]) == 1
    err = capsys.readouterr().err
    assert err.startswith("transseg_evaluate: error:") and message in err and "Traceback" not in err
    assert not (folders / "pred" / "summary.json").exists()


def test_cases_subset_for_a_fold(folders):
    (folders / "pred" / "case_b.nii.gz").unlink()
    summary = evaluate_folder(folders / "ref", folders / "pred", {1: "liver"}, cases=["case_a"])
    assert list(summary["cases"]) == ["case_a"]
    with pytest.raises(TranssegError, match="no reference for 1 case"):
        evaluate_folder(folders / "ref", folders / "pred", {1: "liver"}, cases=["case_z"])
    with pytest.raises(TranssegError, match="no foreground label"):
        evaluate_folder(folders / "ref", folders / "pred", {0: "background"}, cases=["case_a"])


def test_dataset_id_and_overlays_on_the_example_task(ct_task, tmp_path):
    predictions = tmp_path / "predictions"
    for label_file in sorted((ct_task / "labelsTr").glob("*.nii.gz")):
        label, geometry = read_label(label_file)
        write_image(np.roll(label, 2, axis=2), geometry, predictions / label_file.name)
    output = tmp_path / "out" / "summary.json"
    assert main(["-ref", str(ct_task / "labelsTr"), "-pred", str(predictions), "-d", "99", "-o", str(output),
                 "--overlays", "--images", str(ct_task / "imagesTr"), "-np", "2"]) == 0
    summary = json.loads(output.read_text())
    assert summary["labels"] == {"1": "organ", "2": "lesion"} and summary["num_cases"] == 4
    assert 0.5 < summary["mean"]["1_organ"]["dice"] < 1.0
    pictures = sorted((tmp_path / "out" / "overlays").glob("*.png"))
    assert [p.stem for p in pictures] == sorted(summary["cases"])
    from matplotlib.image import imread
    picture = imread(pictures[0])
    assert picture.shape[0] > 300 and picture.shape[1] > 300 and picture[..., :3].std() > 0.05


def test_overlays_on_multichannel_images_and_blank(mr_task, tmp_path):
    labels = mr_task / "labelsTr"                  # evaluated against themselves: a perfect score
    assert main(["-ref", str(labels), "-pred", str(labels), "-o", str(tmp_path / "a" / "summary.json"),
                 "--overlays", "--images", str(mr_task / "imagesTr"), "-np", "1"]) == 0
    assert main(["-ref", str(labels), "-pred", str(labels), "-o", str(tmp_path / "b" / "summary.json"),
                 "--overlays", "-np", "1"]) == 0
    assert len(list((tmp_path / "a" / "overlays").glob("*.png"))) == 3
    assert len(list((tmp_path / "b" / "overlays").glob("*.png"))) == 3
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["foreground_mean"] == {"dice": 1.0, "iou": 1.0, "hd95": 0.0, "nsd": 1.0}


def test_console_script_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "transseg.cli.evaluate", "-ref", str(tmp_path / "missing"),
                             "-pred", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 1
    assert f"{tmp_path / 'missing'}: folder not found." in result.stderr and "Traceback" not in result.stderr
