"""The cached copy of timm's registry: the same names as timm, and planning stays free of torch."""
import json
import os
import subprocess
import sys

from transseg.planning import timm_registry as registry_module


def test_child_process_copy_and_cache_equal_timms_own(monkeypatch, tmp_path):
    expected = registry_module.registry_from_timm()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delitem(sys.modules, "timm")                         # as in a planning process: a child reads it
    registry_module.timm_registry.cache_clear()
    try:
        copied = registry_module.timm_registry()
    finally:
        registry_module.timm_registry.cache_clear()
    assert copied == expected
    assert json.loads(registry_module.cache_path().read_text()) == copied
    assert {"vit_tiny_patch16_224", "beit_base_patch16_224", "swin_base_patch4_window7_224"} <= set(copied["supported"])
    assert "resnet50" in copied["models"] and "resnet50" not in copied["supported"]


def test_planning_never_imports_torch(ct_task, roots):
    """Forked preprocessing workers would carry torch (seconds and hundreds of MB each)."""
    code = ("import sys; from transseg.cli.plan_and_preprocess import main\n"
            "code = main(['-d', '99', '-np', '2', '--backbone', 'vit_tiny_patch16_224', '--min_resolution', '64'])\n"
            "print(code, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy())
    assert result.stdout.split() == ["0", "False"], result.stderr[-2000:]
