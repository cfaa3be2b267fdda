"""Post-processing: the rules, applying them, and choosing them by measurement on constructed cases."""
import json

import numpy as np
import pytest

from transseg.cli.apply_postprocessing import main as apply_cli
from transseg.crossval.postprocessing_choice import choose_postprocessing
from transseg.crossval.results import collect_configuration
from transseg.evaluation import evaluate_folder
from transseg.io import Geometry, read_label, write_image
from transseg.paths import TranssegError
from transseg.postprocessing import (PostprocessingRules, apply_postprocessing, largest_component, load_postprocessing,
                                     save_postprocessing)

SHAPE = (12, 40, 40)
GEOMETRY = Geometry(spacing=(1.0, 1.0, 2.0), origin=(3.0, -4.0, 5.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1),
                    size=tuple(reversed(SHAPE)), pixel_type="uint8")


def _organ(labels: np.ndarray, value: int = 1) -> None:
    labels[2:10, 5:20, 5:20] = value                     # 1,800 voxels


def _stray(labels: np.ndarray, value: int = 1) -> None:
    labels[4:8, 30:36, 30:36] = value                    # 144 voxels, far from the organ


def _kidneys(labels: np.ndarray, value: int = 2) -> None:
    labels[2:8, 25:30, 3:8] = value                      # two genuine components of one class, 150 and 180 voxels
    labels[2:8, 25:30, 12:18] = value


def test_largest_component_is_26_connected_and_keeps_ties():
    mask = np.zeros((3, 5, 5), bool)
    mask[0, 0, 0] = mask[1, 1, 1] = True                 # corner neighbours: one component
    mask[2, 4, 4] = True
    assert largest_component(mask).sum() == 2 and not largest_component(mask)[2, 4, 4]
    ties = np.zeros((1, 1, 5), bool)
    ties[0, 0, [0, 2]] = True
    assert np.array_equal(largest_component(ties), ties)
    assert not largest_component(np.zeros((2, 2, 2), bool)).any()


def test_rules_remove_what_they_name_and_nothing_else():
    labels = np.zeros(SHAPE, np.uint8)
    _organ(labels)
    _stray(labels)
    _kidneys(labels)
    untouched = labels.copy()
    per_class = apply_postprocessing(labels, PostprocessingRules(largest_component_labels=[1]))
    assert np.array_equal(labels, untouched)                            # input unchanged
    assert (per_class == 1).sum() == 1800 and (per_class == 2).sum() == 330
    foreground = apply_postprocessing(labels, PostprocessingRules(largest_foreground_component=True))
    assert (foreground == 1).sum() == 1800 and (foreground == 2).sum() == 0
    assert np.array_equal(apply_postprocessing(labels, PostprocessingRules()), labels)


def test_rules_round_trip_and_bad_files_are_named(tmp_path):
    rules = PostprocessingRules(largest_foreground_component=True, largest_component_labels=[2, 3], chosen_for="plans",
                                measurements=[{"step": "x", "kept": True}])
    save_postprocessing(rules, tmp_path)
    assert load_postprocessing(tmp_path) == rules
    assert load_postprocessing(tmp_path / "nowhere") is None
    (tmp_path / "postprocessing.json").write_text(json.dumps({**rules.to_dict(), "largest_component_labels": [0]}))
    with pytest.raises(TranssegError, match=r"postprocessing.json: largest_component_labels: expected"):
        load_postprocessing(tmp_path)


def _fold(root, cases: dict[str, tuple[np.ndarray, np.ndarray]], labels: dict[int, str]):
    """A configuration whose fold 0 validated ``cases`` (reference, prediction), scored by transseg.evaluation."""
    references, model = root / "gt", root / "Dataset001_X" / "plans"
    validation = model / "fold_0" / "validation"
    for folder in (references, validation):
        folder.mkdir(parents=True, exist_ok=True)
    for case, (reference, prediction) in cases.items():
        write_image(reference, GEOMETRY, references / f"{case}.nii.gz")
        write_image(prediction, GEOMETRY, validation / f"{case}.nii.gz")
    evaluate_folder(references, validation, labels, validation / "summary.json")
    return collect_configuration(model, "plans", [0])


def test_a_stray_blob_gets_the_step_and_two_genuine_components_keep_it_off(tmp_path):
    cases = {}
    for index in range(3):
        reference = np.zeros(SHAPE, np.uint8)
        _organ(reference)
        _kidneys(reference)
        prediction = reference.copy()
        if index < 2:
            _stray(prediction)                                          # lowers class 1's Dice in two cases
        cases[f"case_{index}"] = (reference, prediction)
    rules = choose_postprocessing(_fold(tmp_path, cases, {1: "organ", 2: "kidney"}))
    assert rules.largest_component_labels == [1]
    assert not rules.largest_foreground_component                       # it would delete the kidneys
    steps = {m["step"]: m for m in rules.measurements}
    organ = steps["largest component of class 1 (organ)"]
    assert organ["mean_dice_before"] == pytest.approx((2 * 2 * 1800 / (3600 + 144) + 1) / 3)
    assert organ["mean_dice_after"] == pytest.approx(1.0)
    kidney = steps["largest component of class 2 (kidney)"]
    assert kidney["mean_dice_before"] == 1.0 and kidney["mean_dice_after"] == pytest.approx(2 * 180 / 510)
    assert steps["largest component of all foreground"]["mean_dice_after"] < 0.6


def test_the_foreground_step_is_chosen_when_it_helps(tmp_path):
    reference = np.zeros(SHAPE, np.uint8)
    _organ(reference)
    prediction = reference.copy()
    _stray(prediction, value=1)
    rules = choose_postprocessing(_fold(tmp_path, {"a": (reference, prediction)}, {1: "organ"}))
    assert rules.largest_foreground_component
    assert rules.largest_component_labels == []                         # no further gain on top: not kept (strict >)


def test_apply_postprocessing_command_on_a_folder(tmp_path):
    labels = np.zeros(SHAPE, np.uint8)
    _organ(labels)
    _stray(labels)
    _kidneys(labels)
    (tmp_path / "in").mkdir()
    write_image(labels, GEOMETRY, tmp_path / "in" / "c.nii.gz")
    model = tmp_path / "model"
    assert apply_cli(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(model)]) == 1   # no rules
    assert not (tmp_path / "out").exists()
    save_postprocessing(PostprocessingRules(largest_component_labels=[1]), model)
    assert apply_cli(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(model), "-np", "1"]) == 0
    result, geometry = read_label(tmp_path / "out" / "c.nii.gz")
    assert geometry.agrees_with(GEOMETRY) == [] and result.dtype == np.uint8
    assert np.array_equal(result, apply_postprocessing(labels, PostprocessingRules(largest_component_labels=[1])))
    assert (result == 1).sum() == 1800 and (result == 2).sum() == 330


def test_the_final_label_map_of_a_prediction_gets_the_rules():
    """inference.case.final_labels, where transseg_predict and the Python API make their label maps."""
    from transseg.inference.case import CasePrediction, final_labels
    from transseg.planning.plans import ChannelNormalization, DataPlan
    from transseg.preprocessing import preprocess_arrays

    labels = np.zeros(SHAPE, np.uint8)
    _organ(labels)
    _stray(labels)
    image = np.where(labels > 0, 50.0, 0.0).astype(np.float32)[None] + 1.0
    plan = DataPlan(reorient_to=None, slice_axis=0, in_plane_spacing=[1.0, 1.0], slice_spacing=None,
                    resolution=[32, 32], normalization=[ChannelNormalization("ct", clip=[0.0, 100.0])],
                    label_values=[0, 1], label_names=["background", "organ"])
    _, classes, properties = preprocess_arrays(image, labels, GEOMETRY, plan)
    rules = PostprocessingRules(largest_component_labels=[1])
    raw = final_labels(CasePrediction(properties, classes=classes))
    assert np.array_equal(raw, labels)
    processed = final_labels(CasePrediction(properties, classes=classes, postprocessing=rules))
    assert np.array_equal(processed, apply_postprocessing(labels, rules)) and (processed == 1).sum() == 1800
