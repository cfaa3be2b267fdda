"""Shared fixtures: small generated tasks, the three roots in a temporary folder, the real scans."""
from __future__ import annotations

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
    if not REAL_DATA.is_dir():
        pytest.skip(f"real test scans not found at {REAL_DATA}")
    return REAL_DATA
