"""The documentation that is generated from the code: the figures script runs, cli.md is current."""
from __future__ import annotations

import importlib.util
import struct
from pathlib import Path
from types import ModuleType

DOCUMENTATION = Path(__file__).resolve().parents[1] / "documentation"


def _load(name: str) -> ModuleType:
    """A script of documentation/ as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(name, DOCUMENTATION / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's header; fails on anything that is not a PNG."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


def test_figures_script_runs(tmp_path):
    figures = _load("make_figures")
    assert figures.main([str(tmp_path / "figures")]) == 0
    for name in figures.FIGURES:
        path = tmp_path / "figures" / name
        width, height = _png_size(path)
        assert width >= 1000 and height >= 800, (name, width, height)
        assert 20_000 < path.stat().st_size < 300_000, (name, path.stat().st_size)


def test_cli_reference_is_current(monkeypatch):
    monkeypatch.setenv("COLUMNS", "37")      # the reference must not depend on the terminal
    reference = _load("make_cli_reference")
    committed = DOCUMENTATION / "cli.md"
    expected = reference.render()
    current = committed.read_text(encoding="utf-8") if committed.is_file() else ""
    assert current == expected, (
        "documentation/cli.md is out of date with the command-line parsers: "
        "run `python documentation/make_cli_reference.py` and commit the result")
    for command, _ in reference.console_scripts():
        assert f"\n## {command}\n" in expected, command
