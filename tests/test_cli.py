"""Console scripts: thin fronts, clean errors, honest exit codes."""
import json
import subprocess
import sys

from transseg.cli.plan_and_preprocess import main as plan_and_preprocess_main


def test_plan_and_preprocess_runs_fingerprint_then_plans(ct_task, roots):
    assert plan_and_preprocess_main(["-d", "99", "--verify_dataset_integrity", "-np", "1", "--no_preprocessing",
                                     "--backbone", "vit_tiny_patch16_224", "--min_resolution", "64"]) == 0
    folder = roots["preprocessed"] / "Dataset099_Example"
    assert json.loads((folder / "fingerprint.json").read_text())["dataset_name"] == "Dataset099_Example"
    assert json.loads((folder / "plans.json").read_text())["model"]["backbone"] == "vit_tiny_patch16_224"


def test_console_script_reports_error_without_traceback(tmp_path):
    env_free = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "transseg.cli.extract_fingerprint", "-d", "3"],
                            capture_output=True, text=True, env=env_free)
    assert result.returncode == 1
    assert "export TRANSSEG_raw=" in result.stderr and "Traceback" not in result.stderr
