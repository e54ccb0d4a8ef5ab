"""Smoke test of benchmarks/gpu.py: it runs on the CPU with tiny settings and prints its table.
The GPU figures themselves need a GPU; nothing here asserts a time."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu.py"


@pytest.mark.e2e
def test_gpu_benchmark_runs_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    # 48 px: the local crops (3/7 of it, 21 px) still hold one 16 px ViT patch.
    command = [sys.executable, str(SCRIPT), "--device", "cpu", "--size", "48", "--batch-size", "2", "--steps", "1",
               "--warmup", "1", "--models", "swav-regnety-200mf,dino-vit-tiny", "--json", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "| model | batch per GPU | img/s per GPU | TFLOP/s | MFU (measured peak) | MFU (datasheet) | peak memory |" in lines
    rows = [line for line in lines if line.startswith(("| SwAV, RegNetY-200MF", "| DINO, ViT-Ti/16"))]
    assert len(rows) == 2
    assert all(len(row.strip("|").split("|")) == 7 for row in rows)
    assert any("lightly" in line for line in lines)  # the published figures beside ours

    figures = json.loads(out.read_text())
    assert [r["model"] for r in figures["results"]] == ["swav-regnety-200mf", "dino-vit-tiny"]
    assert all(r["images_per_second"] > 0 and r["flops_per_step"] > 0 for r in figures["results"])

    if not torch.cuda.is_available():  # the default device is cuda: one clear line, exit 2
        refused = subprocess.run([sys.executable, str(SCRIPT), "--steps", "1"], capture_output=True, text=True, timeout=120,
                                 check=False)
        assert refused.returncode == 2
        assert len(refused.stderr.strip().splitlines()) == 1 and "CUDA is not available" in refused.stderr
