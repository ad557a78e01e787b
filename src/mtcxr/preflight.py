"""What the Snakefile runs when it is parsed, before any job starts: the config, the input checks, the lock check."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from mtcxr.config import ConfigError
from mtcxr.errors import InputError
from mtcxr.models.backbone import BackboneError, check_backbone_available
from mtcxr.models.towers import check_finetune_depths

RUN_MARKER = ".snakemake_running"  # under the results folder: "<host> <pid>" of the run writing it


@contextmanager
def stop_on_input_error() -> Iterator[None]:
    """Turn an InputError into its message alone on stderr and exit status 1: no traceback, no job started."""
    try:
        yield
    except InputError as error:
        print(f"mtcxr: error: {error}", file=sys.stderr)
        raise SystemExit(1) from None


def preflight(config: dict) -> list[str]:
    """Check every backbone and the dataset as a whole; return the files the ingest stage reads."""
    from mtcxr.data.ingest import ingest_inputs

    for name, spec in config["backbones"].items():
        try:
            check_backbone_available(spec)
        except BackboneError as error:
            raise ConfigError(f"backbones.{name}: {error}") from None
    check_finetune_depths(config)  # blocks to unfreeze that a base's tower does not have
    check = None
    if config["generation"]["enabled"]:
        from mtcxr.generation.generate import check_generation_inputs
        from mtcxr.generation.nlg import find_java

        find_java(config["generation"]["java"])  # METEOR needs it; say so before hours of upstream jobs
        # Whether the splits have references to retrieve and to score, where the dataset is read here.
        check = partial(
            check_generation_inputs, section=config["generation"]["reference"], source=_dataset_name(config["dataset"])
        )
    return ingest_inputs(config["dataset"], config["text"]["section"], config["seed"], config["on_bad_item"], check)


def _dataset_name(dataset: dict) -> str:
    """The dataset as an error message names it: its manifest or root folder."""
    if dataset.get("kind") == "manifest":
        return f"the manifest {dataset.get('manifest')}"
    if dataset.get("root"):
        return f"the {dataset.get('kind')} dataset at {dataset['root']}"
    return f"the {dataset.get('kind')} dataset"


def mark_running(results: str | Path) -> None:
    """Record this host and process as the run writing `results` (removed by `clear_running`)."""
    marker = Path(results) / RUN_MARKER
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"{socket.gethostname()} {os.getpid()}\n")


def clear_running(results: str | Path) -> None:
    marker = Path(results) / RUN_MARKER
    if marker.is_file() and marker.read_text().split() == [socket.gethostname(), str(os.getpid())]:
        marker.unlink()


def check_not_running(results: str | Path) -> None:
    """Raise InputError when another live Snakemake run on this host is writing `results`.

    Snakemake itself would first report that run's outputs as incomplete and suggest
    --rerun-incomplete, which would destroy the running jobs' work. A marker left by a killed
    run (its process gone) is ignored: Snakemake's own messages then apply (docs/running.md, After an interrupted run).
    """
    marker = Path(results) / RUN_MARKER
    try:
        host, pid = marker.read_text().split()
    except (OSError, ValueError):
        return
    if int(pid) == os.getpid() or not _is_snakemake(host, int(pid)):
        return
    elsewhere = (
        "" if host == socket.gethostname() else f" If no run is going on there (it was killed), delete {marker}."
    )
    raise InputError(
        f"another Snakemake run (process {pid} on {host}) is writing {results}; wait for it to finish or stop it "
        f"(kill -INT {pid} on {host}), then run again. Do not use --unlock or --rerun-incomplete while it runs: "
        f"its jobs' outputs are incomplete only because they are being written.{elsewhere}"
    )


def _is_snakemake(host: str, pid: int) -> bool:
    """Whether `pid` on this host is a live Snakemake process; a run on another host is assumed alive."""
    if host != socket.gethostname():
        return True
    if Path("/proc").is_dir():
        try:
            return b"snakemake" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
