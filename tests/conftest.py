"""Shared fixtures: one complete run of the tiny workflow for every end-to-end test of the session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from tiny_workflow import run_snakemake


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected
def pytest_collection_modifyitems(config, items):
    """Each `snakemake` command imports its Slurm executor plugin, which runs `scontrol show config` to word
    a help text. Where the Slurm client is installed and configured but no controller answers (as
    tests/slurm/slurm_down.sh leaves a machine), that call waits 9 s, in each of the suite's dozens of
    commands. Only test_slurm.py uses Slurm: without it, Slurm commands read an empty configuration and
    fail at once, which the plugin takes in its stride."""
    if not any(item.get_closest_marker("slurm") for item in items):
        os.environ["SLURM_CONF"] = os.devnull


@pytest.fixture(scope="session")
def tiny_results(tmp_path_factory) -> Path:
    """The results folder of one complete tiny run. Tests read it and dry-run on it; a test that runs
    a job again works on a copy, so that every other test sees the complete run as it was written."""
    results = tmp_path_factory.mktemp("tiny") / "results"
    done = run_snakemake(results)
    assert done.returncode == 0, done.stderr[-4000:]
    return results


@pytest.fixture
def pretrained_demo(tiny_results):
    """Copy the shared run's demo backbone into a new results folder, so that another end-to-end run on
    tests/configs/tiny.yaml's `demo_backbone` settings and `seed` skips pretraining (about 1.5 min).

    Snakemake keeps an existing output that has no record of the params it was made with, so the caller
    must keep those two settings as tiny.yaml has them: the copy is then the backbone it would train."""

    def copy_into(results: Path) -> Path:
        target = results / "models/demo_backbone"
        shutil.copytree(tiny_results / "models/demo_backbone", target)
        return target

    return copy_into
