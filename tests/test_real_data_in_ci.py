"""Tests on the shared real scans may be skipped on a developer's machine, never in CI."""
import pytest

import conftest


@pytest.mark.parametrize("ci,outcome", [("true", pytest.fail.Exception), ("1", pytest.fail.Exception),
                                        ("", pytest.skip.Exception), ("false", pytest.skip.Exception)])
def test_missing_real_data_fails_in_ci_and_skips_elsewhere(monkeypatch, tmp_path, ci, outcome):
    monkeypatch.setattr(conftest, "REAL_DATA", tmp_path / "absent")
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="real test scans not found"):
        conftest.require_real_data()


def test_ci_script_sets_ci():
    script = (conftest.Path(conftest.__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert 'export CI="${CI:-true}"' in script
