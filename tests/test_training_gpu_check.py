"""benchmarks/gpu_check.sh refuses to run without a GPU: one line saying why, a non-zero exit, never a silent skip."""
import os
import subprocess
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: run the script itself")
def test_gpu_check_fails_with_one_line_on_a_machine_without_a_gpu(tmp_path):
    result = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "work")], capture_output=True, text=True,
                            env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, timeout=120, cwd=SCRIPT.parents[1])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "gpu_check: no CUDA GPU visible to PyTorch (torch.cuda.is_available() is False); run this on a machine "
        "with one."]
    assert result.stdout == "" and not (tmp_path / "work").exists()
