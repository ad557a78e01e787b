"""Shared fixtures: one complete run of the tiny workflow for every end-to-end test of the session."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from tiny_workflow import REPO, SIDE_RUNS, Running, snakemake, tiny_args

# The suite runs several Snakemake runs and the unit tests side by side on few cores, so a job's OpenMP
# threads (torch's, `threads: 2` rules) often share a core with another process. OpenMP's default is to
# spin-wait at each barrier, burning the core its partner needs: on the 2-core VM a demo-backbone training
# step took 2-4x the CPU time beside another job. Passive waiting yields the core instead; it changes no
# result (docs/design.md, Tests). Set before anything in this process or its children starts OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.hookimpl(tryfirst=True)
def pytest_collection(session):
    """The whole suite as the README runs it (`pytest -q`: the test paths, the default marker expression,
    no -k) needs the shared run: start it before collecting, which takes 20 s of imports on one core."""
    config = session.config
    whole_suite = (
        config.args_source == pytest.Config.ArgsSource.TESTPATHS
        and not config.option.keyword
        and config.option.markexpr == "not slurm"
    )
    if whole_suite:
        os.environ["SLURM_CONF"] = os.devnull  # no Slurm test in it (see below)
        _start(config._tmp_path_factory)


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected
def pytest_collection_modifyitems(config, items):
    """Each `snakemake` command imports its Slurm executor plugin, which runs `scontrol show config` to word
    a help text. Where the Slurm client is installed and configured but no controller answers (as
    tests/slurm/slurm_down.sh leaves a machine), that call waits 9 s, in each of the suite's dozens of
    commands. Only test_slurm.py uses Slurm: without it, Slurm commands read an empty configuration and
    fail at once, which the plugin takes in its stride."""
    if not any(item.get_closest_marker("slurm") for item in items):
        os.environ["SLURM_CONF"] = os.devnull
    start_shared_run(config, items)


# What the session's shared run is made for: tests that read it or copy it (fixtures that need these need it).
SHARED_RUN_FIXTURES = {"tiny_results", "tiny_report", "side_runs"}
_shared_run: dict = {}


def start_shared_run(config, items) -> None:
    """Start the shared tiny run now, in the background, when a selected test needs it, and move the tests
    that need it to the end: the unit tests run on one core while Snakemake's jobs use the other, instead
    of the run holding up the first test that needs it for six minutes."""
    needing = [item for item in items if SHARED_RUN_FIXTURES & set(getattr(item, "fixturenames", ()))]
    if not needing:
        if "running" in _shared_run:  # started before collection, and nothing selected needs it after all
            _stop(_shared_run.pop("running"))
        return
    later = set(needing)
    items[:] = [item for item in items if item not in later] + needing
    if "running" not in _shared_run:
        _start(config._tmp_path_factory)


def _start(tmp_path_factory) -> None:
    results = tmp_path_factory.mktemp("tiny") / "results"
    _shared_run.update(results=results, running=Running(tiny_args(results), REPO, None))


def _stop(running: Running) -> None:
    """Snakemake ends its jobs on SIGTERM."""
    if running.process.is_alive():
        running.process.terminate()
        running.process.join(timeout=60)


def pytest_sessionfinish(session, exitstatus):
    """A session stopped early (-x, Ctrl-C) stops the shared run too: Snakemake ends its jobs on SIGTERM."""
    running = _shared_run.get("running")
    if running is not None and "done" not in _shared_run:
        _stop(running)


@pytest.fixture(scope="session")
def tiny_results(tmp_path_factory) -> Path:
    """The results folder of one complete tiny run. Tests read it and dry-run on it; a test that runs
    a job again works on a copy, so that every other test sees the complete run as it was written."""
    if "running" not in _shared_run:  # selected after collection (e.g. by a plugin): run it here
        _start(tmp_path_factory)
    if "done" not in _shared_run:
        _shared_run["done"] = _shared_run["running"].wait()
    done = _shared_run["done"]
    assert done.returncode == 0, done.stderr[-4000:]
    return _shared_run["results"]


@pytest.fixture(scope="session")
def tiny_report(tiny_results, tmp_path_factory) -> tuple[Path, Path, dict]:
    """`snakemake --report` on the shared run, built once for the tests that read it (test_workflow.py,
    test_report.py): (results, report.html, resolved config)."""
    from mtcxr.config import run_config

    settings = ["--configfile", "tests/configs/tiny.yaml", "--config", f"results={tiny_results}"]
    html = tmp_path_factory.mktemp("tiny_report") / "report.html"
    built = snakemake("--report", str(html), *settings)
    assert built.returncode == 0, built.stderr[-3000:]
    config = run_config(
        default_file=REPO / "config.yaml",
        configfiles=[REPO / "tests/configs/tiny.yaml"],
        command_line={"results": str(tiny_results)},
        schema_file=REPO / "workflow/schemas/config.schema.yaml",
    )
    return tiny_results, html, config


class SideRuns:
    """The side runs started for this session (tiny_workflow.SIDE_RUNS), each waited for once."""

    def __init__(self, started: dict[str, tuple[object, Running]]) -> None:
        self.started, self.done = started, {}

    def result(self, name: str) -> tuple[object, subprocess.CompletedProcess] | None:
        """(what the starter returned for the test, the finished command), or None where nothing ran."""
        if name not in self.started:
            return None
        if name not in self.done:
            self.done[name] = self.started[name][1].wait()
        return self.started[name][0], self.done[name]


@pytest.fixture(scope="session")
def side_runs(request, tmp_path_factory, tiny_results) -> SideRuns:
    """Start every selected side run now, in registration order, and let them go side by side."""
    selected = {item.name for item in request.session.items}
    started = {}
    for name, (tests, start) in SIDE_RUNS.items():
        if selected & set(tests):
            begun = start(tmp_path_factory.mktemp(name), tiny_results)
            if begun is not None:
                started[name] = begun
    return SideRuns(started)
