"""Shared fixtures: one complete run of the tiny workflow for every end-to-end test of the session."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_workflow import run_snakemake


@pytest.fixture(scope="session")
def tiny_results(tmp_path_factory) -> Path:
    """The results folder of one complete tiny run. Tests read it and dry-run on it; a test that runs
    a job again works on a copy, so that every other test sees the complete run as it was written."""
    results = tmp_path_factory.mktemp("tiny") / "results"
    done = run_snakemake(results)
    assert done.returncode == 0, done.stderr[-4000:]
    return results
