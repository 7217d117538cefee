"""bench/gpu_smoke.py at micro shapes on the CPU: every device step runs through its real request path and
reports the device its weights ran on (the GPU run itself happens on a GPU machine, never in tests)."""

import subprocess
import sys

import pytest
from pipeline_utils import REPO

STEPS = ("video fine-tune", "synthesis", "DINO featurize", "LRM train", "held-out eval", "image -> mesh")


@pytest.mark.slow
def test_gpu_smoke_micro_on_cpu(tmp_path) -> None:
    out = tmp_path / "smoke.txt"
    proc = subprocess.run([sys.executable, "bench/gpu_smoke.py", "--device", "cpu", "--precision", "fp32", "--micro",
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    table = out.read_text()
    block = table.split("weights on\n", 1)[1].split("\ntotal ", 1)[0]  # the table, not the per-step details
    rows = [line for line in block.splitlines() if line.startswith(STEPS)]
    assert len(rows) == len(STEPS), table
    for row in rows:
        assert " ok " in row and row.rstrip().endswith("cpu"), row
    assert '"resolved_device": "cpu"' in table and '"resolved_precision": "fp32"' in table
