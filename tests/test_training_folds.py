"""A fold's life beyond one clean run: --overwrite, --val, --c after a cut final validation, ranks sharing it."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import root_flags
from transseg.cli.train import main as train
from transseg.paths import TranssegError
from transseg.training.distributed import _free_port, launch_local

HERE = Path(__file__).resolve().parent


def _copy_trained_fold(example, results: Path) -> Path:
    """fold 0 of the shared trained example, copied into a results root of our own (the fixture stays read-only)."""
    fold = results / "Dataset099_Example" / "plans" / "fold_0"
    shutil.copytree(example.fold_folder, fold)
    return fold


def _summary(fold: Path) -> dict:
    return json.loads((fold / "validation" / "summary.json").read_text())


def test_overwrite_clears_the_previous_run_before_the_first_step(trained_example, tmp_path, monkeypatch, capsys):
    fold = _copy_trained_fold(trained_example, tmp_path)

    class Stopped:
        def __init__(self, *args, **kwargs):
            assert not list(fold.glob("checkpoint_*.pt")) and not (fold / "validation").exists()
            raise TranssegError("stopped before the first step")

    monkeypatch.setattr("transseg.training.entrypoints.Trainer", Stopped)
    roots = {**trained_example.roots, "results": tmp_path}
    assert train(["99", "0", "--device", "cpu", "--overwrite", *root_flags(roots, "preprocessed", "results")]) == 1
    assert "stopped before the first step" in capsys.readouterr().err
    assert not list(fold.glob("checkpoint_*.pt")), "transseg_predict would still find the old run's weights"
    assert not (fold / "validation").exists()
    assert not (fold / "metrics.jsonl").exists() or not (fold / "metrics.jsonl").read_text()   # the new run's, empty


def test_val_redoes_the_final_validation_and_npz_keeps_the_probabilities(trained_example, tmp_path, capsys):
    fold = _copy_trained_fold(trained_example, tmp_path)
    shutil.rmtree(fold / "validation")
    roots = {**trained_example.roots, "results": tmp_path}
    flags = ["--device", "cpu", *root_flags(roots, "preprocessed", "results")]
    assert train(["99", "0", "--val", *flags]) == 0
    original = json.loads((trained_example.fold_folder / "validation" / "summary.json").read_text())
    redone = _summary(fold)
    assert set(redone["cases"]) == set(original["cases"]) == {"example_003", "example_004"}
    for case, entry in original["cases"].items():      # the same network and code: the same figures
        assert redone["cases"][case]["metrics"] == entry["metrics"], case
    assert not list((fold / "validation").glob("*.npz"))

    assert train(["99", "0", "--val", "-chk", "best", "--npz", *flags]) == 0
    assert "from the checkpoint of step 160" in capsys.readouterr().err
    for case in ("example_003", "example_004"):
        with np.load(fold / "validation" / f"{case}.npz", allow_pickle=False) as archive:
            probabilities = archive["probabilities"]
            properties = json.loads(archive["properties_json"].tobytes().decode("utf-8"))
        assert probabilities.dtype == np.float16 and probabilities.shape[0] == 3
        assert list(probabilities.shape[1:]) == properties["shape_after_resampling"]
        assert np.allclose(probabilities.astype(np.float32).sum(0), 1.0, atol=1e-2)
    assert _summary(fold)["foreground_mean"]["dice"] == pytest.approx(redone["foreground_mean"]["dice"])

    shutil.rmtree(fold)
    assert train(["99", "0", "--val", *flags]) == 1
    assert "checkpoint_final.pt: not found; --val predicts" in capsys.readouterr().err


def test_continue_does_a_final_validation_that_was_cut_short(trained_example, tmp_path, capsys):
    fold = _copy_trained_fold(trained_example, tmp_path)
    (fold / "validation" / "summary.json").unlink()            # killed after the predictions, before the summary
    final = (fold / "checkpoint_final.pt").stat().st_mtime_ns
    roots = {**trained_example.roots, "results": tmp_path}
    assert train(["99", "0", "--c", "--device", "cpu", *root_flags(roots, "preprocessed", "results")]) == 0
    assert "its final validation is missing" in capsys.readouterr().err
    assert set(_summary(fold)["cases"]) == {"example_003", "example_004"}
    assert (fold / "checkpoint_final.pt").stat().st_mtime_ns == final        # no training happened


def test_two_ranks_share_the_final_validation_within_a_short_timeout(trained_example, tmp_path):
    """Scoring a case takes 6 s more here and the ranks wait at most 12 s for each other: the run only
    finishes because each rank predicts and scores its own case while the other does the same."""
    fold = _copy_trained_fold(trained_example, tmp_path)
    shutil.rmtree(fold / "validation")
    roots = {**trained_example.roots, "results": tmp_path}
    command = [sys.executable, str(HERE / "ddp_slow_scoring.py"), "6", "99", "0", "--val", "--device", "cpu",
               "--set", "training.distributed_timeout_minutes=0.2", *root_flags(roots, "preprocessed", "results")]
    assert launch_local(2, command) == 0
    assert set(_summary(fold)["cases"]) == {"example_003", "example_004"}


def test_a_case_failing_on_one_rank_ends_every_rank_at_once_naming_it(trained_example, tmp_path):
    """Two ranks that no launcher stops when one fails (srun without --kill-on-bad-exit), a 5-minute
    timeout: both must end, each saying which case failed. Before, the healthy rank died on gloo's
    closed connection without naming it (and NCCL would have kept it waiting for the timeout)."""
    fold = _copy_trained_fold(trained_example, tmp_path)
    shutil.rmtree(fold / "validation")
    roots = {**trained_example.roots, "results": tmp_path}
    command = [sys.executable, str(HERE / "ddp_failing_case.py"), "example_004", "99", "0", "--val", "--device",
               "cpu", "--set", "training.distributed_timeout_minutes=5", *root_flags(roots, "preprocessed", "results")]
    port = str(_free_port())
    ranks = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={
        **os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "OMP_NUM_THREADS": "1"}) for rank in range(2)]
    try:
        errors = [rank.communicate(timeout=150)[1] for rank in ranks]
    finally:
        for rank in ranks:
            rank.kill()
    assert [rank.returncode for rank in ranks] == [1, 1], errors
    for error in errors:
        assert "final validation failed on example_004 (rank " in error and "made unreadable by the test" in error
    assert not (fold / "validation" / "summary.json").exists()
