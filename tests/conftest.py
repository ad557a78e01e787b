"""Shared fixtures: one complete run of the tiny workflow for every end-to-end test of the session."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from tiny_workflow import REPO, SNAKEMAKE, run_snakemake


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


@pytest.fixture(scope="session")
def tiny_report(tiny_results, tmp_path_factory) -> tuple[Path, Path, dict]:
    """`snakemake --report` on the shared run, built once for the tests that read it (test_workflow.py,
    test_report.py): (results, report.html, resolved config)."""
    from mtcxr.config import run_config

    settings = ["--configfile", "tests/configs/tiny.yaml", "--config", f"results={tiny_results}"]
    html = tmp_path_factory.mktemp("tiny_report") / "report.html"
    built = subprocess.run([*SNAKEMAKE, "--report", str(html), *settings], cwd=REPO, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    config = run_config(
        default_file=REPO / "config.yaml",
        configfiles=[REPO / "tests/configs/tiny.yaml"],
        command_line={"results": str(tiny_results)},
        schema_file=REPO / "workflow/schemas/config.schema.yaml",
    )
    return tiny_results, html, config


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
