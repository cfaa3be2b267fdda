from pathlib import Path

import pytest

from transseg.paths import (TranssegError, canonical_dataset_name, find_dataset_folder, get_root,
                            resolve_dataset_name)


def _make(root: Path, *names: str) -> None:
    for name in names:
        (root / name).mkdir(parents=True)


def test_number_resolves_msd_and_nnunet_names(tmp_path):
    _make(tmp_path, "Task03_Liver", "Dataset004_Hippocampus", "notes")
    assert find_dataset_folder(3, tmp_path).name == "Task03_Liver"
    assert find_dataset_folder("4", tmp_path).name == "Dataset004_Hippocampus"
    assert find_dataset_folder("003", tmp_path).name == "Task03_Liver"


def test_full_names_resolve_across_layouts(tmp_path):
    _make(tmp_path, "Task03_Liver")
    assert find_dataset_folder("Task03_Liver", tmp_path).name == "Task03_Liver"
    assert find_dataset_folder("Dataset003_Liver", tmp_path).name == "Task03_Liver"
    assert canonical_dataset_name("Task03_Liver") == "Dataset003_Liver"


def test_no_match_lists_what_exists(tmp_path):
    _make(tmp_path, "Task03_Liver", "Task09_Spleen")
    with pytest.raises(TranssegError) as error:
        find_dataset_folder(5, tmp_path)
    assert "Task03_Liver" in str(error.value) and "Task09_Spleen" in str(error.value)


def test_several_matches_are_ambiguous(tmp_path):
    _make(tmp_path, "Task03_Liver", "Dataset003_Other")
    with pytest.raises(TranssegError, match="ambiguous") as error:
        find_dataset_folder(3, tmp_path)
    assert "Task03_Liver" in str(error.value) and "Dataset003_Other" in str(error.value)


def test_missing_root_folder(tmp_path):
    with pytest.raises(TranssegError, match="does not exist"):
        find_dataset_folder(3, tmp_path / "nowhere")


def test_unset_variable_names_the_export_line(monkeypatch):
    monkeypatch.delenv("TRANSSEG_results", raising=False)
    with pytest.raises(TranssegError, match="export TRANSSEG_results="):
        get_root("results")


def test_flag_overrides_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("TRANSSEG_raw", "/from/variable")
    assert get_root("raw") == Path("/from/variable")
    assert get_root("raw", tmp_path) == tmp_path


def test_resolution_falls_back_to_preprocessed_root(tmp_path):
    _make(tmp_path / "pre", "Dataset007_Pancreas")
    (tmp_path / "raw").mkdir()
    assert resolve_dataset_name(7, tmp_path / "raw", tmp_path / "pre") == "Dataset007_Pancreas"
