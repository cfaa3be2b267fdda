"""Console scripts: thin fronts, clean errors, honest exit codes."""
import json
import os
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


def test_a_commands_imports_run_with_the_collector_paused_then_are_frozen(tmp_path, monkeypatch):
    import gc
    from transseg.cli.common import import_with_collector_paused
    (tmp_path / "heavy_module_for_test.py").write_text(
        "import gc\nCOLLECTOR_ON_DURING_IMPORT = gc.isenabled()\ncycle = []\ncycle.append(cycle)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    frozen_before = gc.get_freeze_count()
    try:
        import_with_collector_paused(["heavy_module_for_test"])
        module = sys.modules["heavy_module_for_test"]
        assert module.COLLECTOR_ON_DURING_IMPORT is False
        assert gc.isenabled()                                  # restored afterwards
        assert gc.get_freeze_count() > frozen_before           # what the import made is frozen
        assert gc.is_tracked(module.cycle)
        frozen_after = gc.get_freeze_count()
        import_with_collector_paused(["heavy_module_for_test"])    # loaded already: nothing collected or frozen
        assert gc.get_freeze_count() == frozen_after
    finally:
        gc.unfreeze()
        sys.modules.pop("heavy_module_for_test", None)


def test_console_entry_ends_without_teardown_keeping_status_and_output(tmp_path):
    marker = tmp_path / "teardown_ran"
    script = (
        "import atexit, logging, sys\n"
        "from transseg.cli.common import exit_without_teardown\n"
        f"atexit.register(lambda: open({str(marker)!r}, 'w').close())\n"
        "def main():\n"
        "    logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
        "    print('to stdout', end='')\n"
        "    logging.getLogger('x').info('last line')\n"
        "    if sys.argv[1] == 'usage':\n"
        "        raise SystemExit(2)\n"
        "    return int(sys.argv[1])\n"
        "exit_without_teardown(main)()\n")
    for argument, status in (("3", 3), ("0", 0), ("usage", 2)):
        result = subprocess.run([sys.executable, "-c", script, argument], capture_output=True, text=True,
                                env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"})
        assert result.returncode == status, result.stderr
        assert result.stdout == "to stdout" and result.stderr.strip() == "last line"    # flushed before the exit
        assert not marker.exists()                                                      # no interpreter teardown
