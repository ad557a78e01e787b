"""Running the workflow on tests/configs/tiny.yaml from a test (the session's complete run: conftest.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def run_snakemake(results: Path, *extra: str) -> subprocess.CompletedProcess:
    """Snakemake on tests/configs/tiny.yaml writing under `results`; `extra` may start with more
    `--config` values (Snakemake keeps one `--config` flag only), then other flags."""
    command = [
        *SNAKEMAKE,
        "--cores",
        "2",
        "--nolock",
        "--configfile",
        "tests/configs/tiny.yaml",
        "--config",
        f"results={results}",
        *extra,
    ]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True)
