"""Plans variants (the paper's ablations as configurations) share preprocessed cases when preprocessing is the same."""
import dataclasses
import json

import numpy as np
import pytest

from transseg.cli.plan_and_preprocess import main as plan_and_preprocess
from transseg.cli.plan_experiment import main as plan_experiment
from transseg.cli.preprocess import main as preprocess
from transseg.dataset import load_dataset
from transseg.io import read_image, read_label
from transseg.planning.plans import NOT_PREPROCESSING_FIELDS, load_plans
from transseg.preprocessing import preprocess_arrays
from transseg.preprocessing.entrypoints import run_preprocess

PLANNER = ["--backbone", "vit_tiny_patch16_224", "--min_resolution", "64", "--no_pretrained"]
CHANGED = {"resolution": [96, 96], "window_slices": 1, "window_stride": 2, "predict": "all",
           "label_names": ["background", "a", "b"]}


def test_fields_left_out_of_the_hash_do_not_change_preprocessing(ct_task):
    """Each field preprocessing is said not to read is changed; the case comes out identical, the hash unchanged."""
    assert set(CHANGED) == set(NOT_PREPROCESSING_FIELDS)
    assert plan_and_preprocess(["-d", "99", "-np", "1", "--no_preprocessing", *PLANNER]) == 0
    plans_file = ct_task.parents[1] / "preprocessed" / "Dataset099_Example" / "plans.json"
    plans = load_plans(plans_file)
    case = load_dataset(ct_task).training[0]
    data, geometry = read_image(case.images[0])
    seg = read_label(case.label)[0]
    reference = preprocess_arrays(data, seg, geometry, plans.data)
    for name, value in CHANGED.items():
        variant = dataclasses.replace(plans, data=dataclasses.replace(plans.data, **{name: value}))
        assert variant.content_hash() == plans.content_hash(), name
        output = preprocess_arrays(data, seg, geometry, variant.data)
        assert np.array_equal(output[0], reference[0]) and np.array_equal(output[1], reference[1]), name
        assert output[2] == reference[2], name
    for name, value in {"in_plane_spacing": [0.5, 0.5], "data_dtype": "float32", "slice_spacing": 2.0}.items():
        variant = dataclasses.replace(plans, data=dataclasses.replace(plans.data, **{name: value}))
        assert variant.content_hash() != plans.content_hash(), name


def test_a_k1_variant_reuses_the_cases_and_a_different_grid_gets_its_own(ct_task, roots):
    assert plan_and_preprocess(["-d", "99", "-np", "1", *PLANNER]) == 0
    folder = roots["preprocessed"] / "Dataset099_Example"
    stamps = {p.name: p.stat().st_mtime_ns for p in (folder / "plans").iterdir()}

    assert plan_experiment(["-d", "99", "--plans_name", "plans_k1", "--slices", "1", "--inflation", "average",
                            *PLANNER]) == 0
    variant = load_plans(folder / "plans_k1.json")
    assert variant.plans_name == "plans_k1" and variant.data_identifier == "plans"
    assert variant.data.window_slices == 1 and variant.model.inflation == "average"
    assert any("shared with 'plans'" in line for line in variant.decisions)
    summary = run_preprocess(99, num_processes=1, plans_name="plans_k1")
    assert summary["written"] == [] and len(summary["skipped"]) == 4
    assert not (folder / "plans_k1").exists()
    assert {p.name: p.stat().st_mtime_ns for p in (folder / "plans").iterdir()} == stamps
    assert json.loads((folder / "plans.json").read_text()).get("data_identifier") is None

    assert plan_experiment(["-d", "99", "--plans_name", "plans_fine", *PLANNER[:-3], "--min_resolution", "96",
                            "--no_pretrained"]) == 0
    fine = load_plans(folder / "plans_fine.json")
    assert fine.data_identifier is None and fine.content_hash() != variant.content_hash()
    assert preprocess(["-d", "99", "-np", "1", "--plans_name", "plans_fine"]) == 0
    assert len(list((folder / "plans_fine").glob("*.npz"))) == 4


@pytest.mark.parametrize("flag, value", [("--plans_name", "bad/name"), ("--inflation", "sideways")])
def test_bad_variant_flags_are_refused(ct_task, capsys, flag, value):
    with pytest.raises(SystemExit):
        plan_experiment(["-d", "99", flag, value])
    assert flag in capsys.readouterr().err


def test_a_variant_edited_away_from_its_shared_cases_never_overwrites_them(ct_task, roots, capsys):
    assert plan_and_preprocess(["-d", "99", "-np", "1", *PLANNER]) == 0
    assert plan_experiment(["-d", "99", "--plans_name", "plans_k1", "--slices", "1", *PLANNER]) == 0
    folder = roots["preprocessed"] / "Dataset099_Example"
    variant = json.loads((folder / "plans_k1.json").read_text())
    variant["data"]["in_plane_spacing"] = [1.0, 1.0]                 # a hand edit of a preprocessing field
    (folder / "plans_k1.json").write_text(json.dumps(variant))
    stamps = {p.name: p.stat().st_mtime_ns for p in (folder / "plans").iterdir()}
    assert preprocess(["-d", "99", "-np", "1", "--plans_name", "plans_k1"]) == 1
    assert "shares the cases in" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in (folder / "plans").iterdir()} == stamps
