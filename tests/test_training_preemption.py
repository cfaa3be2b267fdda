"""Pre-emption as a cluster does it: SIGTERM to the whole process group (launcher, ranks, loader workers).

The latest state is saved at the step the signal interrupted, and ``--c`` ends with the weights of
an uninterrupted run of the same layout, bit for bit on the CPU (one process, and two gloo ranks).
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import root_flags, train_arguments
from transseg.checkpoint import load_checkpoint
from transseg.cli.train import main as train

STEPS = 10
RANK_STEPS = 6
ARGUMENTS = ["99", "1", *train_arguments(STEPS, "--save_every", "1000", "--val_every", "1000", "--no_final_validation")]


def _fold(results: Path) -> Path:
    return results / "Dataset099_Example" / "plans" / "fold_1"


def _steps(fold: Path) -> list[int]:
    lines = (fold / "metrics.jsonl").read_text().splitlines() if (fold / "metrics.jsonl").is_file() else []
    return [json.loads(line)["step"] for line in lines if line.strip()]


@pytest.fixture(scope="module")
def reference(trained_example, tmp_path_factory):
    """Final weights of the uninterrupted one-process run."""
    roots = {**trained_example.roots, "results": tmp_path_factory.mktemp("uninterrupted")}
    assert train([*ARGUMENTS, *root_flags(roots, "preprocessed", "results")]) == 0
    return load_checkpoint(_fold(roots["results"]) / "checkpoint_final.pt")["model"]


def _terminate_group_at(command: list, fold: Path, step: int, log: Path) -> tuple[int, str]:
    """Start ``command`` in its own process group; SIGTERM the whole group once ``step`` is logged."""
    with open(log, "w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
        deadline = time.time() + 180
        while time.time() < deadline and process.poll() is None and max(_steps(fold), default=0) < step:
            time.sleep(0.05)
        assert process.poll() is None, f"the run ended before it could be stopped:\n{log.read_text()[-3000:]}"
        os.killpg(process.pid, signal.SIGTERM)
        try:
            code = process.wait(timeout=120)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    return code, log.read_text()


def _assert_saved_at_the_interrupted_step(fold: Path, message: str, steps: int = STEPS) -> int:
    assert "Continue with --c" in message, message[-3000:]
    assert "is killed by signal" not in message
    saved = load_checkpoint(fold / "checkpoint_latest.pt")["step"]
    assert saved == max(_steps(fold)) and 3 <= saved < steps
    assert not (fold / "checkpoint_final.pt").exists()
    return saved


def test_sigterm_to_the_group_with_loader_workers_saves_and_continue_gives_the_same_weights(
        trained_example, reference, tmp_path):
    roots = {**trained_example.roots, "results": tmp_path}
    fold = _fold(tmp_path)
    command = [sys.executable, "-m", "transseg.cli.train", *ARGUMENTS, "--set", "training.loader_workers=2",
               *root_flags(roots, "preprocessed", "results")]
    code, message = _terminate_group_at(command, fold, 3, tmp_path / "stderr.txt")
    assert code == 1
    _assert_saved_at_the_interrupted_step(fold, message)
    assert train([*ARGUMENTS, "--c", *root_flags(roots, "preprocessed", "results")]) == 0
    resumed = load_checkpoint(fold / "checkpoint_final.pt")
    assert resumed["step"] == STEPS and _steps(fold) == list(range(1, STEPS + 1))
    for name, tensor in reference.items():
        assert torch.equal(resumed["model"][name], tensor), name        # bit-exact on the CPU


def test_sigterm_to_torchrun_and_two_gloo_ranks_saves_and_continue_gives_the_same_weights(trained_example, tmp_path,
                                                                                           monkeypatch):
    # torchrun gives each rank 1 thread, our launcher the CPUs shared out; pin it so both sum in the same order
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    arguments = [*ARGUMENTS, "--steps", str(RANK_STEPS)]
    whole = {**trained_example.roots, "results": tmp_path / "whole"}
    assert train([*arguments, "--num_gpus", "2", *root_flags(whole, "preprocessed", "results")]) == 0
    reference_ranks = load_checkpoint(_fold(whole["results"]) / "checkpoint_final.pt")["model"]

    roots = {**trained_example.roots, "results": tmp_path / "cut"}
    fold = _fold(roots["results"])
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "transseg.cli.train", *arguments, "--set", "training.loader_workers=1",
               *root_flags(roots, "preprocessed", "results")]
    _, message = _terminate_group_at(command, fold, 3, tmp_path / "stderr.txt")
    _assert_saved_at_the_interrupted_step(fold, message, RANK_STEPS)
    assert json.loads((fold / "run.json").read_text())["world_size"] == 2
    # torchrun signals each rank's own process group, its loader worker included; continued by the
    # built-in launcher: the same two ranks, the same global batch of 4
    assert train([*arguments, "--c", "--num_gpus", "2", *root_flags(roots, "preprocessed", "results")]) == 0
    resumed = load_checkpoint(fold / "checkpoint_final.pt")
    assert resumed["step"] == RANK_STEPS and _steps(fold) == list(range(1, RANK_STEPS + 1))
    for name, tensor in reference_ranks.items():
        assert torch.equal(resumed["model"][name], tensor), name


def test_one_stop_request_arriving_twice_is_one_request_and_a_late_second_ctrl_c_stops_at_once(monkeypatch):
    """A launcher forwards the signal its group already got (torchrun, --num_gpus, SLURM): the rank sees it
    twice within milliseconds and must still save; only a second Ctrl-C seconds later means 'stop now'."""
    from transseg.training import trainer
    clock = [100.0]
    monkeypatch.setattr(trainer.time, "monotonic", lambda: clock[0])
    with trainer.StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)                         # the handlers run here
        assert stop.requested
        clock[0] += trainer.StopRequest.REPEAT_SECONDS + 1
        os.kill(os.getpid(), signal.SIGTERM)     # SLURM's repeated TERM: still saving
        time.sleep(0.01)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
    assert signal.getsignal(signal.SIGTERM) != stop._handle          # the previous handlers are back
