"""benchmarks/gpu_check.sh: where no GPU is visible it stops at once with one line; its checks of the tiny
study hold on a complete run and name exactly what says the run was not on a GPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_workflow import load_benchmark

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible: the script would run its checks")
def test_without_a_gpu_it_stops_at_once_in_one_line(tmp_path: Path):
    out = tmp_path / "check"
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks/gpu_check.sh"), str(out)],
        capture_output=True,
        text=True,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: no CUDA GPU is visible to torch"), done.stderr
    assert not out.exists()


def test_usage_without_an_outdir():
    done = subprocess.run(["bash", str(REPO / "benchmarks/gpu_check.sh")], capture_output=True, text=True)
    assert done.returncode != 0 and "usage: bash benchmarks/gpu_check.sh OUTDIR" in done.stderr


@pytest.mark.slow
def test_the_tiny_study_checks_hold_except_where_it_ran(tiny_results: Path):
    """On the shared CPU run every table check holds, and exactly the records of a CPU run fail: that is
    what the script reports on a GPU machine whose stages silently fell back to the CPU."""
    failures = load_benchmark("gpu_check").check_tiny_study(tiny_results)
    assert failures == [
        "the demo's text embeddings ran at fp32, not bf16 on cuda",
        "fine-tuning ran on cpu at fp32, checkpointing False",
        "no log under logs/train_head says it ran on cuda",
        "no log under logs/train_xtra says it ran on cuda",
    ]
