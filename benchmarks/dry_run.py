"""Time `snakemake -n` over a MIMIC-sized config and count its jobs, for several shard counts and data sizes.

Writes (or reuses, with --keep) the simulated MIMIC-CXR-JPG tree of
benchmarks/ingest_mimic.py: the metadata, split and CheXpert CSVs and the reports zip,
no images (nothing in a dry run opens one, and the pre-flight check only looks for
dataset.root). The config is configs/mimic_cxr.yaml pointed at that tree, with results
in a fresh folder and two backbones: `demo` and a `local-dir:` folder holding only
a tiny open_clip_config.json and an empty weights file (the pre-flight check reads
them; a dry run loads nothing). Then it runs, from the repository root,

    python -m snakemake -n --cores all --configfile <config>

three times per case, and reports the median wall time and the job count Snakemake
prints. Jobs should follow the shards, never the images: the same shard count gives
the same DAG for a quarter of MIMIC and for all of it. Each case is timed twice: as
installed, and with the Slurm executor plugin's start-up probe answered at once (see
`without_slurm_probe`), so that a machine with Slurm installed but no controller
running does not hide the workflow's own cost.

Usage: .venv/bin/python benchmarks/dry_run.py [--shards 16 64] [--scales 0.25 1.0] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from ingest_mimic import ensure_built  # benchmarks/ is on sys.path when this runs as a script

REPO = Path(__file__).resolve().parents[1]
REPEATS = 3


def write_config(folder: Path, tree: Path, shards: int) -> Path:
    """Write configs/mimic_cxr.yaml pointed at `tree`, with `shards` shards and two backbones; return its path."""
    model = folder / "local_model"
    model.mkdir(parents=True, exist_ok=True)
    tower = {"layers": 1, "width": 32, "heads": 2}
    model_cfg = {"embed_dim": 32, "vision_cfg": {**tower, "image_size": 32, "patch_size": 16}, "text_cfg": tower}
    (model / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    (model / "open_clip_pytorch_model.bin").write_bytes(b"")
    config = yaml.safe_load((REPO / "configs" / "mimic_cxr.yaml").read_text())
    config["results"] = str(folder / f"results-{shards}")
    config["dataset"]["root"] = str(tree)
    config["dataset"]["reports"] = str(tree / "mimic-cxr-reports.zip")
    config["images"]["shards"] = shards
    config["backbones"] = {"demo": "demo", "local": f"local-dir:{model}"}
    path = folder / f"config-{shards}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_snakemake(*flags: str, env: dict | None = None) -> tuple[float, str]:
    """Run `python -m snakemake *flags` from the repository root; return (wall seconds, its output)."""
    command = [sys.executable, "-m", "snakemake", *flags]
    start = time.perf_counter()
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if run.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{run.stdout[-3000:]}{run.stderr[-3000:]}")
    return seconds, run.stdout + run.stderr


def dry_run(config: Path, env: dict | None = None) -> tuple[float, int]:
    """Time `snakemake -n --cores all --configfile config`; return (wall seconds, jobs)."""
    seconds, output = run_snakemake("-n", "--cores", "all", "--configfile", str(config), env=env)
    total = re.search(r"^total\s+(\d+)\s*$", output, re.MULTILINE)
    if not total:
        raise RuntimeError(f"no job count in the dry run's output:\n{output[-3000:]}")
    return seconds, int(total.group(1))


def without_slurm_probe(folder: Path) -> dict:
    """An environment whose `scontrol` fails at once.

    The Slurm executor plugin runs `scontrol show config` (10 s timeout) whenever Snakemake
    starts; where slurm-wlm is installed but no controller runs, every start waits for it.
    A failing `scontrol` is what the plugin meets on a machine without Slurm, and about
    what it meets on a cluster whose controller answers.
    """
    folder.mkdir(parents=True, exist_ok=True)
    stub = folder / "scontrol"
    stub.write_text("#!/bin/sh\nexit 1\n")
    stub.chmod(0o755)
    return {**os.environ, "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}


def median_of(runs: list[tuple[float, int]]) -> tuple[str, str]:
    """(median seconds, the runs' job counts: one number unless the DAG varied) of repeated dry runs."""
    seconds, jobs = zip(*runs)
    return f"{statistics.median(seconds):.1f} s", "/".join(str(n) for n in sorted(set(jobs)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--scales", type=float, nargs="+", default=[0.25, 1.0], help="fractions of MIMIC's size")
    parser.add_argument("--keep", type=Path, help="build the simulated sets under this folder and keep them")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        quick = without_slurm_probe(Path(scratch) / "bin")
        print(f"| data | shards | jobs | `snakemake -n`, median of {REPEATS} | the same, Slurm probe answered |")
        print("|---|---|---|---|---|")
        sets = args.keep or Path(scratch)
        for scale in args.scales:
            counts = ensure_built(sets / f"scale-{scale}", scale)
            data = f"{counts['images']:,} images, {counts['studies']:,} reports"
            for shards in args.shards:
                config = write_config(Path(scratch) / f"scale-{scale}", sets / f"scale-{scale}", shards)
                as_is, jobs = median_of([dry_run(config) for _ in range(REPEATS)])
                answered, quick_jobs = median_of([dry_run(config, quick) for _ in range(REPEATS)])
                print(f"| {data} | {shards} | {jobs} | {as_is} | {answered} ({quick_jobs} jobs) |", flush=True)
        start_up = [run_snakemake("--version", env=env)[0] for env in (None, quick)]
        version = run_snakemake("--version")[1].strip()
    print(
        f"\nSnakemake's own start-up (`snakemake --version`): {start_up[0]:.1f} s, {start_up[1]:.1f} s with the probe "
        f"answered; {platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}, snakemake {version}"
    )


if __name__ == "__main__":
    main()
