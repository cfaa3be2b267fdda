"""run_preprocess and its command lines: outputs, skipping, overwrite, failures, kill-and-rerun."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from transseg.cli.plan_and_preprocess import main as plan_and_preprocess_main
from transseg.cli.preprocess import main as preprocess_main
from transseg.example import ExampleSettings, make_example_task
from transseg.files import TEMPORARY_MARKER
from transseg.io import read_label
from transseg.paths import TranssegError
from transseg.planning.entrypoints import run_extract_fingerprint, run_plan_experiment
from transseg.planning.planner import PlannerOptions
from transseg.planning.plans import load_plans, save_plans
from transseg.preprocessing import case_is_current, list_cases, load_case, restore_segmentation, run_preprocess

DATASET = "Dataset099_Example"


def plan(number: int = 99) -> Path:
    run_extract_fingerprint(number, num_processes=1)
    return run_plan_experiment(number, options=PlannerOptions(min_resolution=64))


def outputs(roots) -> Path:
    return roots["preprocessed"] / DATASET / "plans"


def assert_all_valid(folder: Path, identifiers: list[str], plans_hash: str) -> None:
    """Every case complete, current, fully readable (numpy checks each member's CRC), no temporaries."""
    for identifier in identifiers:
        assert case_is_current(folder, identifier, plans_hash), identifier
        with np.load(folder / f"{identifier}.npz", allow_pickle=False) as archive:
            data, seg = archive["data"], archive["seg"]
        _, _, properties = load_case(folder, identifier)
        assert list(data.shape[1:]) == properties["shape_after_resampling"] == list(seg.shape)
    assert not [p for p in folder.parent.rglob("*") if p.name.startswith(TEMPORARY_MARKER)]


def test_cases_written_with_ground_truth_and_within_storage_bound(ct_task, roots):
    plans_file = plan()
    summary = run_preprocess(99, num_processes=2)
    identifiers = [f"example_{i:03d}" for i in range(4)]
    assert sorted(summary["written"]) == identifiers and not summary["skipped"] and not summary["failed"]
    plans = load_plans(plans_file)
    assert_all_valid(outputs(roots), identifiers, plans.content_hash())
    for identifier in identifiers:
        data, seg, properties = load_case(outputs(roots), identifier, mmap=False)
        assert data.dtype == np.float16 and data.shape[0] == 1 and seg.dtype == np.uint8
        assert data.min() >= -1 and data.max() <= 1
        stored = (outputs(roots) / f"{identifier}.npz").stat().st_size
        assert stored <= 1.25 * (data.nbytes + seg.nbytes)
        label_file = ct_task / "labelsTr" / f"{identifier}.nii.gz"
        copy = roots["preprocessed"] / DATASET / "gt_segmentations" / f"{identifier}.nii.gz"
        assert copy.read_bytes() == label_file.read_bytes()
        assert properties["plans_hash"] == plans.content_hash()
        # in-plane upsampling by a non-integer factor: not exact, but nearly everything comes back
        original, _ = read_label(label_file)
        assert (restore_segmentation(seg, properties) == original).mean() > 0.97


def test_two_channel_mr_is_cropped_together_and_scaled_per_channel(mr_task, roots):
    plan(98)
    run_preprocess(98, num_processes=1)
    data, _, properties = load_case(roots["preprocessed"] / "Dataset098_ExampleMR" / "plans", "examplemr_000")
    assert data.shape[0] == 2 and [n["scheme"] for n in properties["normalization"]] == ["mr_robust"] * 2
    assert properties["normalization"][0]["high"] != properties["normalization"][1]["high"]
    assert properties["shape_after_crop"] != properties["shape_before_crop"]     # zero background cropped


def test_current_cases_are_skipped_overwrite_and_new_plans_redo_them(ct_task, roots):
    plans_file = plan()
    run_preprocess(99, num_processes=1)
    archive = outputs(roots) / "example_000.npz"
    first = archive.stat().st_mtime_ns
    again = run_preprocess(99, num_processes=1)
    assert len(again["skipped"]) == 4 and not again["written"] and archive.stat().st_mtime_ns == first

    assert preprocess_main(["-d", "99", "-np", "1", "--overwrite"]) == 0
    assert archive.stat().st_mtime_ns != first

    plans = load_plans(plans_file)
    plans.data.normalization[0].clip = [-50.0, 80.0]
    save_plans(plans, plans_file)
    redone = run_preprocess(99, num_processes=1)
    assert len(redone["written"]) == 4 and not redone["skipped"]
    assert load_case(outputs(roots), "example_000")[2]["normalization"][0]["low"] == -50.0


def test_failing_case_is_named_while_the_others_finish(ct_task, roots, capsys):
    plan()
    (ct_task / "imagesTr" / "example_002.nii.gz").write_bytes(b"not a nifti file at all")
    assert preprocess_main(["-d", "99", "-np", "2"]) == 1
    error = capsys.readouterr().err
    assert "failed for 1 of 4 cases" in error and "example_002" in error and "example_002.nii.gz" in error
    for identifier in ("example_000", "example_001", "example_003"):
        assert (outputs(roots) / f"{identifier}.json").is_file()
    assert not (outputs(roots) / "example_002.json").exists()
    with pytest.raises(TranssegError, match="example_002"):
        run_preprocess(99, num_processes=1)


def test_missing_plans_is_a_clear_error(ct_task, roots, capsys):
    assert preprocess_main(["-d", "99"]) == 1
    assert "no plans yet" in capsys.readouterr().err


def test_kill_mid_way_then_rerun_leaves_only_valid_outputs(roots):
    make_example_task(roots["raw"], ExampleSettings(num_training=14, num_test=0, in_plane=(128, 112),
                                                    slices=(24, 32)))
    plans_file = plan()
    folder = outputs(roots)
    identifiers = [f"example_{i:03d}" for i in range(14)]
    command = [sys.executable, "-m", "transseg.cli.preprocess", "-d", "99", "-np", "2"]
    process = subprocess.Popen(command, env=os.environ.copy(), start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list_cases(folder) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    os.killpg(process.pid, signal.SIGKILL)                     # the whole job: main process and workers
    process.wait()
    done = len(list_cases(folder))
    assert 1 <= done < len(identifiers), f"kill came too late to test anything ({done} cases done)"

    (folder / f"{TEMPORARY_MARKER}deadbeef-example_013.npz").write_bytes(b"half an archive")
    first_done = list_cases(folder)[0]
    (folder / f"{first_done}.json").unlink()                  # as if killed between the archive and its JSON
    summary = run_preprocess(99, num_processes=2)
    assert summary["removed_temporaries"] >= 1 and first_done in summary["written"]
    assert sorted(summary["written"] + summary["skipped"]) == identifiers
    assert_all_valid(folder, identifiers, load_plans(plans_file).content_hash())
    assert list_cases(folder) == identifiers


def test_plan_and_preprocess_runs_all_three_steps(ct_task, roots):
    assert plan_and_preprocess_main(["-d", "99", "-np", "1", "--min_resolution", "64"]) == 0
    assert len(list(outputs(roots).glob("*.npz"))) == 4
    assert plan_and_preprocess_main(["-d", "99", "-np", "1", "--min_resolution", "64", "--no_preprocessing",
                                     "--clean"]) == 0


def test_dead_worker_is_reported_not_a_hang(ct_task, roots, monkeypatch):
    """A worker killed outright (as by the out-of-memory killer) fails its case with a reason."""
    import transseg.preprocessing.entrypoints as entrypoints
    plan()
    real = entrypoints.preprocess_case

    def dies_on_one_case(case, data_plan):
        if case.identifier == "example_001":
            os.kill(os.getpid(), signal.SIGKILL)
        return real(case, data_plan)

    monkeypatch.setattr(entrypoints, "preprocess_case", dies_on_one_case)   # forked workers inherit it
    with pytest.raises(TranssegError, match=r"example_001: lost: a worker process died"):
        run_preprocess(99, num_processes=2)
