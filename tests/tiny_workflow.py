"""Running Snakemake's command line from a test, and the tiny workflow (tests/configs/tiny.yaml) with it.

The suite runs `snakemake` about a hundred times. A new interpreter spends 2-3 s importing Snakemake
(its executor plugins bring pandas and SQLAlchemy) before it reads a rule; here a fork server imports it
once and each command runs in a process forked from it: `snakemake.cli.main` with the command's
arguments, working directory and environment, and its stdout and stderr (the jobs' too) captured at the
file-descriptor level, as `python -m snakemake ...` would run them.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]

_forkserver = None


def _context():
    """The fork-server context, started on first use (after conftest.py has set the environment)."""
    global _forkserver
    if _forkserver is None:
        _forkserver = multiprocessing.get_context("forkserver")
        # The server is a fresh interpreter, not a fork of this one: no torch threads, no test state.
        _forkserver.set_forkserver_preload(["snakemake.cli"])
    return _forkserver


def _snakemake_main(args: list[str], cwd: str, env: dict[str, str], out: str, err: str) -> None:
    """In the forked process: `snakemake ARGS` from `cwd` under `env`, output into the files `out`, `err`."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for path, fd in ((out, 1), (err, 2)):
        with open(path, "wb") as file:
            os.dup2(file.fileno(), fd)
    sys.argv = ["snakemake", *args]
    from snakemake.cli import main

    try:
        main(args)  # exits through SystemExit, whose code becomes the process's exit code
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


class Running:
    """A `snakemake` command running in a process forked from the fork server."""

    def __init__(self, args: list[str], cwd: str | Path, env: Mapping[str, str] | None) -> None:
        self.args = args
        self.folder = tempfile.TemporaryDirectory(prefix="snakemake-run-")
        self.out, self.err = Path(self.folder.name, "stdout"), Path(self.folder.name, "stderr")
        self.process = _context().Process(
            target=_snakemake_main, args=(args, str(cwd), dict(env or os.environ), str(self.out), str(self.err))
        )
        self.process.start()

    def wait(self) -> subprocess.CompletedProcess:
        """Its exit code and text output, once it has ended."""
        self.process.join()
        try:
            return subprocess.CompletedProcess(
                ["snakemake", *self.args],
                self.process.exitcode,
                self.out.read_text(errors="replace"),
                self.err.read_text(errors="replace"),
            )
        finally:
            self.folder.cleanup()


def snakemake(*args: str, cwd: str | Path = REPO, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
    """`snakemake ARGS` as a command, run in a process forked from the fork server; text output captured."""
    return Running(list(args), cwd, env).wait()


def tiny_args(results: Path, *extra: str) -> list[str]:
    """Arguments of Snakemake on tests/configs/tiny.yaml writing under `results`; `extra` may start with more
    `--config` values (Snakemake keeps one `--config` flag only), then other flags."""
    return [
        "--cores",
        "2",
        # One thread per job, two jobs at a time: a tiny job is mostly its 3-8 s of single-threaded start-up
        # (imports), and a rule asking for 2 threads would hold both cores through it, one job at a time.
        "--max-threads",
        "1",
        "--nolock",
        "--configfile",
        "tests/configs/tiny.yaml",
        "--config",
        f"results={results}",
        *extra,
    ]


def run_snakemake(results: Path, *extra: str) -> subprocess.CompletedProcess:
    """Snakemake on tests/configs/tiny.yaml writing under `results` (see tiny_args)."""
    return snakemake(*tiny_args(results, *extra))


def copy_demo_backbone(tiny_results: Path, results: Path) -> Path:
    """Copy the shared run's demo backbone into a new results folder, so that another end-to-end run on
    tests/configs/tiny.yaml's `demo_backbone` settings and `seed` skips pretraining (about 1.5 min).

    Snakemake keeps an existing output that has no record of the params it was made with, so the caller
    must keep those two settings as tiny.yaml has them: the copy is then the backbone it would train."""
    target = results / "models/demo_backbone"
    shutil.copytree(tiny_results / "models/demo_backbone", target)
    return target


# Runs that start from the shared one (a copy of it, or its demo backbone), each checked by one or more
# tests. The modules that define them register them here at import; conftest.side_runs starts every one
# that a selected test reads, at once, when the shared run has ended, so they go side by side.
# Name -> (the tests that read it, starter); a starter takes (a new folder, the shared results) and returns
# (what the tests need, the Running command), or None when it has nothing to run (its tests then skip).
SIDE_RUNS: dict[str, tuple[tuple[str, ...], Callable[[Path, Path], tuple[object, Running] | None]]] = {}


def load_benchmark(name: str):
    """The script benchmarks/NAME.py as a module (registered under its name: dataclasses look it up)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
