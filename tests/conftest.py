"""Shared fixtures: small generated tasks, the three roots in a temporary folder, the real scans."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from transseg.example import ExampleSettings, make_example_task

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


@pytest.fixture
def roots(tmp_path, monkeypatch) -> dict[str, Path]:
    """Fresh raw/preprocessed/results roots, exported as the TRANSSEG_* variables."""
    paths = {kind: tmp_path / kind for kind in ("raw", "preprocessed", "results")}
    for kind, path in paths.items():
        path.mkdir()
        monkeypatch.setenv(f"TRANSSEG_{kind}", str(path))
    return paths


@pytest.fixture
def ct_task(roots) -> Path:
    return make_example_task(roots["raw"], ExampleSettings(task_id=99, num_training=4, num_test=2))


@pytest.fixture
def mr_task(roots) -> Path:
    return make_example_task(roots["raw"], ExampleSettings(task_id=98, name="ExampleMR", modality="MR",
                                                           num_training=3, num_test=1))


def require_real_data() -> Path:
    """The shared real scans. Missing: a skip on a developer's machine, a failure in CI (``CI`` set, as CI
    services and .ci/run set it), so CI can never pass while silently skipping the real-file tests."""
    if not REAL_DATA.is_dir():
        message = f"real test scans not found at {REAL_DATA}"
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false"):
            pytest.fail(f"{message}; CI must have them (../shared/data/real beside the project)", pytrace=False)
        pytest.skip(message)
    return REAL_DATA


# ------------------------------------------------------------------------------------------ trained model
TRAINING_STEPS = 160


def root_flags(roots: dict[str, Path], *kinds: str) -> list[str]:
    return [flag for kind in kinds for flag in (f"--{kind}_root", str(roots[kind]))]


def train_arguments(steps: int, *extra: str) -> list[str]:
    """Flags of a quick CPU run: tiny batch, random init, loading in the main process."""
    return ["--device", "cpu", "--steps", str(steps), "--batch_size", "4", "--lr", "1e-3", "--no_pretrained",
            "--set", "training.loader_workers=0", *extra]


@pytest.fixture(scope="session")
def trained_example(tmp_path_factory):
    """The example CT task planned for vit_tiny at 64 px, preprocessed, and fold 0 trained for 160 steps.

    Shared by the training, prediction and evaluation tests; treat it as read-only (train other
    folds or runs into a results root of your own).
    """
    from types import SimpleNamespace

    from transseg.cli.plan_and_preprocess import main as plan_and_preprocess
    from transseg.cli.train import main as train

    base = tmp_path_factory.mktemp("trained_example")
    roots = {kind: base / kind for kind in ("raw", "preprocessed", "results")}
    task = make_example_task(roots["raw"], ExampleSettings(task_id=99, num_training=6, num_test=3))
    assert plan_and_preprocess(["-d", "99", "-np", "1", "--backbone", "vit_tiny_patch16_224", "--min_resolution",
                                "64", "--no_pretrained", *root_flags(roots, "raw", "preprocessed")]) == 0
    assert train(["99", "0", *train_arguments(TRAINING_STEPS, "--val_every", "40"),
                  *root_flags(roots, "raw", "preprocessed", "results")]) == 0
    return SimpleNamespace(roots=roots, task=task, steps=TRAINING_STEPS,
                           model_folder=roots["results"] / "Dataset099_Example" / "plans",
                           fold_folder=roots["results"] / "Dataset099_Example" / "plans" / "fold_0")
