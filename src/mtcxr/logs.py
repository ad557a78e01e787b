"""Logging for workflow scripts: everything to the rule's log file, warnings and up also to stderr."""

from __future__ import annotations

import atexit
import logging
import resource
import sys
import time
from pathlib import Path

from mtcxr.errors import InputError


def log_to_file(path: str | Path, level: int = logging.INFO) -> None:
    """Send logging (and uncaught exceptions) to `path`, the rule's `log:` file."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(path, mode="w")
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    to_stderr = logging.StreamHandler(sys.stderr)
    to_stderr.setLevel(logging.WARNING)
    to_stderr.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[to_file, to_stderr], force=True)
    for noisy in ("PIL", "matplotlib", "urllib3", "huggingface_hub", "filelock", "faiss.loader"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    def log_uncaught(kind, error, traceback):
        # A fault in the user's input is its message alone; anything else is a bug, with its traceback.
        details = None if isinstance(error, InputError) else (kind, error, traceback)
        logging.getLogger("mtcxr").error("stopped: %s", error, exc_info=details)

    sys.excepthook = log_uncaught
    atexit.register(log_job_resources, time.perf_counter())


# The line each job's log ends with; benchmarks/scale.py reads it.
RESOURCES_FORMAT = "job resources: %.2f CPU s, peak RSS %.1f MB, wall %.1f s"


def log_job_resources(started: float) -> None:
    """Log the job's CPU time and peak memory, exactly, as it exits. Snakemake's `benchmark:` files sample
    them (every second for 30 s, then every 30 s), so a job's last seconds of CPU and a late peak can be
    missing there: a 42 s ingest was recorded at 15 CPU s of its 52."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    peak_mb = max(own.ru_maxrss, children.ru_maxrss) / 1024  # Linux reports KiB
    logging.getLogger("mtcxr").info(RESOURCES_FORMAT, cpu, peak_mb, time.perf_counter() - started)
