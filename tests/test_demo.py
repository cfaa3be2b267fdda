"""transseg_demo: the whole pipeline on the example task, as the README's first command runs it (fewer steps)."""
import json

from transseg.cli.demo import main as demo


def test_the_demo_runs_every_stage_and_says_where_everything_is(tmp_path, capsys, monkeypatch):
    for kind in ("raw", "preprocessed", "results"):
        monkeypatch.delenv(f"TRANSSEG_{kind}", raising=False)      # the demo needs no environment
    assert demo([str(tmp_path / "demo"), "--steps", "40"]) == 0
    out = capsys.readouterr().out
    root = tmp_path / "demo"
    summary = json.loads((root / "predictions" / "summary.json").read_text())
    assert summary["num_cases"] == 4
    assert f"mean foreground Dice on the 4 test cases: {summary['foreground_mean']['dice']:.3f}" in out
    for line, path in (("plans:", root / "preprocessed" / "Dataset099_Example" / "plans.json"),
                       ("training:", root / "results" / "Dataset099_Example" / "plans" / "fold_0" / "progress.png"),
                       ("predictions:", root / "predictions"), ("evaluation:", root / "predictions" / "summary.json"),
                       ("pictures:", root / "predictions" / "overlays")):
        assert f"{line}" in out and str(path) in out and path.exists(), line
    assert len(list((root / "predictions").glob("*.nii.gz"))) == 4
    assert len(list((root / "predictions" / "overlays").glob("*.png"))) == 4
