"""Nothing is unpickled anywhere, and no path from dataset.json or plans leaves its root."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from transseg.dataset import load_dataset
from transseg.paths import TranssegError
from transseg.planning.plans import Plans

PACKAGE = Path(__file__).resolve().parents[1] / "transseg"


def unpickling(source: str) -> list[str]:
    """Lines that could unpickle: a pickler imported, torch.load without weights_only=True, allow_pickle set."""
    found = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            if any(n and n.split(".")[0] in ("pickle", "dill", "cloudpickle", "joblib") for n in names):
                found.append(f"{node.lineno}: imports a pickler")
        if not isinstance(node, ast.Call):
            continue
        keywords = {k.arg: k.value for k in node.keywords}
        if ast.unparse(node.func).endswith("torch.load"):
            value = keywords.get("weights_only")
            if not (isinstance(value, ast.Constant) and value.value is True):
                found.append(f"{node.lineno}: torch.load without weights_only=True")
        value = keywords.get("allow_pickle")
        if value is not None and not (isinstance(value, ast.Constant) and value.value is False):
            found.append(f"{node.lineno}: allow_pickle is not False")
    return found


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_can_unpickle(path):
    assert unpickling(path.read_text(encoding="utf-8")) == [], path


def test_the_scan_finds_what_it_looks_for():
    """The check above fails on code that unpickles, so its passing means something."""
    source = ("import pickle\nimport torch, numpy as np\nx = torch.load('f')\n"
              "y = torch.load('f', weights_only=False)\nz = np.load('g', allow_pickle=True)\n")
    assert unpickling(source) == ["1: imports a pickler", "3: torch.load without weights_only=True",
                                  "4: torch.load without weights_only=True", "5: allow_pickle is not False"]


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "imagesTr/../../outside.nii.gz"])
def test_dataset_json_cannot_name_files_outside_its_folder(tmp_path, name):
    folder = tmp_path / "Task01_Test"
    folder.mkdir()
    (folder / "dataset.json").write_text(json.dumps({
        "modality": {"0": "CT"}, "labels": {"0": "background", "1": "organ"},
        "training": [{"image": name, "label": "./labelsTr/a.nii.gz"}], "test": []}))
    with pytest.raises(TranssegError, match="points outside the dataset folder"):
        load_dataset(folder)


def test_a_dataset_json_path_inside_its_folder_is_fine(tmp_path):
    folder = tmp_path / "Task01_Test"
    folder.mkdir()
    (folder / "dataset.json").write_text(json.dumps({
        "modality": {"0": "CT"}, "labels": {"0": "background", "1": "organ"},
        "training": [{"image": "./imagesTr/../imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz"}], "test": []}))
    case = load_dataset(folder).training[0]
    assert case.images[0] == folder / "imagesTr" / "a.nii.gz" and case.label == folder / "labelsTr" / "a.nii.gz"


@pytest.mark.parametrize("plans_name", ["../escape", "a/b", ".hidden", ""])
def test_plans_names_cannot_leave_their_folder(plans_name):
    plans = {"schema_version": 1, "dataset_name": "Dataset001_Test", "plans_name": plans_name,
             "data": {"reorient_to": None, "slice_axis": 0, "in_plane_spacing": [1.0, 1.0], "slice_spacing": None,
                      "resolution": [64, 64], "normalization": [{"scheme": "ct", "clip": [-100.0, 100.0]}],
                      "label_values": [0, 1], "label_names": ["background", "organ"]}}
    with pytest.raises(TranssegError, match="plans_name"):
        Plans.from_dict(plans)
