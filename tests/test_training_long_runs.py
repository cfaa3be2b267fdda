"""What only shows in a long run, imitated small: open files, host syncs, plot memory, Dice memory,
loader workers per node, the process group's timeout, and checkpoints cut short while written."""
import datetime
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import transseg.checkpoint as checkpoint_module
from transseg import devices
from transseg.checkpoint import load_checkpoint, save_checkpoint
from transseg.preprocessing import save_case
from transseg.training.distributed import DistributedContext, init_distributed
from transseg.training.progress import MetricsLog, plot_progress
from transseg.training.trainer import Trainer
from transseg.training.validation import dice_per_class

# ------------------------------------------------------------------------------------- open files
OPEN_FILES_SCRIPT = """
import resource, sys
from pathlib import Path
resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
from transseg.inference.window_spec import WindowSpec
from transseg.preprocessing import list_cases
from transseg.training.loader import BatchLayout, WindowBatches, make_loader, training_cases
folder = Path(sys.argv[1])
cases = training_cases(folder, list_cases(folder))
batches = WindowBatches(folder, cases, WindowSpec(3, 1, (16, 16)), BatchLayout(8, 8), augmentation=None, seed=0,
                        oversampling=0.5, first_step=0, steps=60)
print(len(cases), sum(len(item["image"]) for item in make_loader(batches, 2)))
"""


def test_a_thousand_cases_train_under_an_open_file_limit_of_256(tmp_path):
    """Every case's memory maps hold open files; each loader worker keeps a bounded number of cases open."""
    rng = np.random.default_rng(0)
    seg = np.zeros((6, 16, 16), np.uint8)
    seg[2:4, 4:9, 4:9] = 1
    for index in range(1000):
        data = rng.standard_normal((1, 6, 16, 16)).astype(np.float16)
        save_case(tmp_path, f"case_{index:04d}", data, seg,
                  {"shape_after_resampling": [6, 16, 16], "class_locations": {"1": [2, 3]}})
    result = subprocess.run([sys.executable, "-c", OPEN_FILES_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["1000", "480"]       # 480 windows drawn from ~400 cases in each worker


# ------------------------------------------------------------------------------------- host syncs
SYNCS = ("item", "tolist", "__float__", "__int__", "__bool__", "cpu", "numpy")


def _count_host_syncs(monkeypatch) -> list:
    """Record every tensor-to-host read made from transseg's own code (torch's internals are not ours)."""
    calls = []
    for name in SYNCS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.startswith("transseg"):
                calls.append((_name, caller))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return calls


def test_one_host_sync_per_optimiser_step_with_accumulation(trained_example, tmp_path, monkeypatch):
    from transseg.training.config import TrainOptions
    from transseg.training.entrypoints import prepare_fold
    options = TrainOptions(dataset="99", fold="1", device="cpu", steps=3, batch_size=4, no_pretrained=True,
                           overrides=["training.loader_workers=0", "training.batch_size_per_gpu=2"],
                           preprocessed_root=str(trained_example.roots["preprocessed"]), results_root=str(tmp_path))
    setup, _ = prepare_fold(options, DistributedContext())
    trainer = Trainer(setup, DistributedContext())
    assert setup.batch.accumulation == 2
    monkeypatch.setattr(trainer, "_validate_if_due", lambda record: (False, False))
    monkeypatch.setattr(trainer, "save", lambda name: None)
    calls = _count_host_syncs(monkeypatch)
    trainer.run(None)
    assert len(calls) == 3, calls          # 3 steps of 2 micro-batches: one read per step


# ------------------------------------------------------------------------------------- plot and Dice memory
def _record(step: int) -> dict:
    return {"step": step, "loss": float(step % 7), "dice_loss": 0.5, "focal_loss": 0.25, "lr": 1e-4 * step,
            "windows_per_s": 10.0}


def test_progress_keeps_a_bounded_downsampled_series_and_resumes(tmp_path):
    log = MetricsLog(tmp_path, capacity=100)
    for step in range(1, 10_001):
        record = _record(step)
        if step % 1000 == 0:
            record.update(val_mean_dice=0.5, val_ema_dice=0.4, val_dice_per_class={"organ": 0.5})
        log.append(record)
    series = log.series
    assert 50 <= len(series.points) <= 100 and series.stride == 128
    covered = len(series.points) * series.stride      # each point: the mean of `stride` consecutive steps
    assert np.mean(series.column("loss")) == pytest.approx(np.mean([s % 7 for s in range(1, covered + 1)]))
    assert series.column("step")[0] == pytest.approx((1 + series.stride) / 2)
    assert [r["step"] for r in log.validations] == list(range(1000, 10_001, 1000))
    plot_progress(log, tmp_path / "progress.png")
    assert (tmp_path / "progress.png").read_bytes()[:4] == b"\x89PNG"
    log.close()

    resumed = MetricsLog(tmp_path, resume_step=5000, capacity=100)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 5000 and json.loads(lines[-1])["step"] == 5000
    assert len(resumed.validations) == 5 and len(resumed.series.points) <= 100
    resumed.close()


def test_validation_dice_needs_the_memory_of_a_chunk_not_of_the_volume():
    rng = np.random.default_rng(0)
    prediction = rng.integers(0, 3, (320, 128, 128), dtype=np.uint8)
    reference = rng.integers(0, 3, (320, 128, 128), dtype=np.uint8)
    expected = [2 * np.sum((prediction == c) & (reference == c)) / (np.sum(prediction == c) + np.sum(reference == c))
                for c in (1, 2)]
    tracemalloc.start()
    scores = dice_per_class(prediction, reference, 3)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert scores == pytest.approx(expected, abs=1e-12)
    assert peak < 2 * prediction.nbytes, f"{peak / 2 ** 20:.1f} MiB for a {prediction.nbytes / 2 ** 20:.1f} MiB volume"


# ------------------------------------------------------------------------------------- ranks and nodes
def test_the_process_group_gets_the_timeout_and_workers_follow_the_ranks_of_this_node(monkeypatch):
    """2 nodes x 8 GPUs, 64 CPUs a node: each rank gets 64 / 8 - 1 = 7 loader workers, not 64 / 16 - 1."""
    joined = {}
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group",
                        lambda backend, **kw: joined.update(kw, backend=backend))
    for key, value in {"WORLD_SIZE": "16", "RANK": "11", "LOCAL_RANK": "3", "LOCAL_WORLD_SIZE": "8"}.items():
        monkeypatch.setenv(key, value)
    context = init_distributed("cpu", timeout_minutes=90)
    assert joined == {"backend": "gloo", "timeout": datetime.timedelta(minutes=90)}
    assert (context.rank, context.world_size, context.local_rank, context.local_world_size) == (11, 16, 3, 8)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(64)), raising=False)
    monkeypatch.setattr(devices, "cgroup_cpu_limit", lambda: None)         # a CI container's quota aside
    fake = SimpleNamespace(setup=SimpleNamespace(plans=SimpleNamespace(training=SimpleNamespace(loader_workers=None))),
                           context=context)
    assert Trainer.loader_workers(fake) == 7
    monkeypatch.setattr(devices, "cgroup_cpu_limit", lambda: 24.0)         # docker --cpus 24 on that node
    assert Trainer.loader_workers(fake) == 2                               # 24 / 8 - 1, not 64 / 8 - 1


# ------------------------------------------------------------------------------------- atomic checkpoints
def test_a_checkpoint_write_that_fails_half_way_leaves_the_previous_one(tmp_path, monkeypatch):
    latest = tmp_path / "checkpoint_latest.pt"
    save_checkpoint({"step": 10, "model": {"w": torch.ones(1000)}}, latest)
    before = latest.read_bytes()
    real_save = torch.save

    def save_then_fail(state, path, *args, **kwargs):
        real_save(state, path, *args, **kwargs)
        with open(path, "r+b") as handle:            # the disk filled up half way through
            handle.truncate(Path(path).stat().st_size // 2)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", save_then_fail)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint({"step": 20, "model": {"w": torch.zeros(1000)}}, latest)
    assert latest.read_bytes() == before and load_checkpoint(latest)["step"] == 10
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_latest.pt"]     # no partial file anywhere


def test_a_checkpoint_is_fsynced_before_and_its_folder_after_the_rename(tmp_path, monkeypatch):
    import os
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                 real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(b))), real_replace(a, b)))
    target = tmp_path / "checkpoint_final.pt"
    save_checkpoint({"step": 1}, target)
    kinds = [kind for kind, _ in events]
    assert kinds == ["fsync", "replace", "fsync"], events
    assert events[0][1] != str(target) and Path(events[0][1]).parent == tmp_path      # the temporary file
    assert events[2][1] == str(tmp_path)                                               # then its folder


def test_the_checkpoint_policy_in_one_place():
    from transseg.checkpoint import BEST, FINAL, LATEST
    from transseg.training.trainer import checkpoints_due
    due = lambda step, validated=False, improved=False, stopping=False: checkpoints_due(  # noqa: E731
        step, steps=1000, save_every=250, validated=validated, improved=improved, stopping=stopping)
    assert due(13) == [] and due(250) == [LATEST]
    assert due(300, validated=True) == [LATEST] and due(300, validated=True, improved=True) == [BEST, LATEST]
    assert due(13, stopping=True) == [LATEST]                         # Ctrl-C / SIGTERM: --c continues from it
    assert due(1000, validated=True, improved=True) == [BEST, LATEST, FINAL]
