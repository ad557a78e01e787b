"""Logging for workflow scripts: everything to the rule's log file, warnings and up also to stderr."""

from __future__ import annotations

import logging
import sys
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
