"""Throughput of `mtcxr label` (the real CLI function, file in to file out) on one CPU core.

Builds a synthetic set of realistic reports (default 200,000) by resampling the sentences of the
real IU X-ray reports (sentences mixed in from other reports, shuffled, dropped) and perturbing a
share of the sentences (a side, size or degree word swapped, or a measurement added), so that the
sentence cache sees a realistic mix of repeated and new sentences. --data is a folder in the IU
X-ray Kaggle layout; only its `indiana_reports.csv` (columns uid, findings, impression) is read.
With --templates instead, sentences written from templates stand in for the real reports. The set
is written as CSV, then `mtcxr.cli.main(["label", ...])` runs in a child process pinned to one
core (`taskset -c 0` where available, and POLARS_MAX_THREADS=1 etc.) and reports/s is printed,
timed inside the process (CSV read to Parquet written) and for the whole process (interpreter
start and imports included). Last, the distinct sentences are labelled cold, which gives the cost
of a sentence the labeler has not seen before.

Usage: .venv/bin/python benchmarks/labeler_throughput.py (--data DIR | --templates) [--reports N]
       [--perturb F] [--repeats R]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

SENTENCE_RE = re.compile(r"(?<=[.!?])\s+")
SWAPS = {
    "left": "right",
    "right": "left",
    "mild": "moderate",
    "moderate": "severe",
    "small": "large",
    "large": "small",
    "minimal": "mild",
    "upper": "lower",
    "lower": "upper",
    "stable": "unchanged",
    "unchanged": "stable",
    "bilateral": "bibasilar",
    "increased": "decreased",
    "the": "the",
}
TEMPLATE_SENTENCES = [
    "The heart is normal in size.",
    "Heart size is mildly enlarged.",
    "The cardiomediastinal silhouette is normal.",
    "No focal consolidation, pleural effusion, or pneumothorax.",
    "There is a small left pleural effusion.",
    "Possible right lower lobe pneumonia.",
    "Bibasilar atelectasis.",
    "Mild pulmonary edema.",
    "No acute cardiopulmonary abnormality.",
    "Degenerative changes of the thoracic spine.",
    "Calcified granuloma in the right upper lobe.",
    "Endotracheal tube terminates 4 cm above the carina.",
    "Lungs are clear.",
    "Stable cardiomegaly.",
    "No pneumothorax.",
    "Atelectasis versus consolidation at the left base.",
]

CHILD = """
import sys, time
from mtcxr.cli import main
start = time.perf_counter()
code = main(["label", sys.argv[1], "--id-column", "uid", "--text-column", "report", "-o", sys.argv[2], "-q"])
print(time.perf_counter() - start)
sys.exit(code)
"""
# Cost of a sentence the labeler has not seen (the cache's miss path), from distinct sentences.
COLD = """
import sys, time
import polars as pl
from mtcxr.labels.extract import label_reports
sentences = pl.read_parquet(sys.argv[1])["sentence"].to_list()
start = time.perf_counter()
label_reports(sentences)
print(time.perf_counter() - start)
"""


def real_reports(data: Path | None) -> list[list[str]]:
    """Sentences of each real report (findings + impression), or [] without a data folder."""
    if data is None:
        return []
    reports = (
        pl.read_csv(data / "indiana_reports.csv", infer_schema=False)
        .select(pl.concat_str([pl.col("findings").fill_null(""), pl.col("impression").fill_null("")], separator=" "))
        .to_series()
    )
    return [SENTENCE_RE.split(text.strip()) for text in reports.to_list() if text.strip()]


def perturb(sentence: str, rng: np.random.Generator) -> str:
    """Swap a side/size/degree word or add a measurement, so the sentence is new to the cache but
    still reads like a report."""
    words = sentence.split(" ")
    candidates = [index for index, word in enumerate(words) if word.lower() in SWAPS]
    if candidates and rng.random() < 0.5:
        index = candidates[rng.integers(len(candidates))]
        words[index] = SWAPS[words[index].lower()]
        return " ".join(words)
    measurement = f" measuring {rng.integers(2, 90) / 10:.1f} cm"
    return sentence[:-1] + measurement + "." if sentence.endswith(".") else sentence + measurement


def synthetic_reports(count: int, seed: int, data: Path | None, perturb_rate: float = 0.3) -> list[str]:
    """`count` reports resampled from the real ones (or templates), `perturb_rate` of sentences perturbed."""
    rng = np.random.default_rng(seed)
    source = real_reports(data) or [TEMPLATE_SENTENCES[i : i + 6] for i in range(0, len(TEMPLATE_SENTENCES), 3)]
    pool = [sentence for sentences in source for sentence in sentences]
    reports = []
    for _ in range(count):
        sentences = list(source[rng.integers(len(source))])
        # Mix in sentences from other reports, drop some, shuffle, and perturb some.
        for _ in range(rng.integers(0, 3)):
            sentences.insert(rng.integers(len(sentences) + 1), pool[rng.integers(len(pool))])
        if len(sentences) > 2 and rng.random() < 0.3:
            sentences.pop(rng.integers(len(sentences)))
        if rng.random() < 0.5:
            rng.shuffle(sentences)
        sentences = [perturb(s, rng) if rng.random() < perturb_rate else s for s in sentences]
        reports.append(" ".join(sentences))
    return reports


def run_pinned(code: str, *arguments: str) -> tuple[float, float]:
    """(seconds the child prints, seconds for the whole child process), the child on one core."""
    env = dict(os.environ, POLARS_MAX_THREADS="1", OMP_NUM_THREADS="1", RAYON_NUM_THREADS="1")
    command = [sys.executable, "-c", code, *arguments]
    if shutil.which("taskset"):
        command = ["taskset", "-c", "0", *command]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1]), time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reports", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3, help="runs; the best is reported")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--perturb", type=float, default=0.3, help="share of sentences perturbed (new to the cache)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="IU X-ray folder (Kaggle layout) holding indiana_reports.csv")
    source.add_argument("--templates", action="store_true", help="resample template sentences, no real reports")
    args = parser.parse_args(argv)
    if args.data is not None and not (args.data / "indiana_reports.csv").is_file():
        print(
            f"{args.data}: no indiana_reports.csv here; pass --data an IU X-ray folder (Kaggle layout)", file=sys.stderr
        )
        return 2

    reports = synthetic_reports(args.reports, args.seed, args.data, args.perturb)
    with tempfile.TemporaryDirectory() as folder:
        csv, output = Path(folder) / "reports.csv", Path(folder) / "labels.parquet"
        pl.DataFrame({"uid": [f"r{i:07d}" for i in range(len(reports))], "report": reports}).write_csv(csv)
        sentences = {s for r in reports for s in SENTENCE_RE.split(r)}
        blind = {re.sub(r"\d", "0", s.lower()) for s in sentences}
        print(
            f"{len(reports):,} reports ({args.perturb:.0%} of sentences perturbed), {csv.stat().st_size / 1e6:.1f} MB CSV, "
            f"mean {np.mean([len(r) for r in reports]):.0f} characters, {len(sentences):,} distinct sentences "
            f"({len(blind):,} ignoring case and digits)"
        )
        print(
            f"machine: {platform.machine()}, {platform.platform()}, Python {platform.python_version()}, "
            f"{os.cpu_count()} logical CPUs; child pinned to 1 core: {bool(shutil.which('taskset'))}"
        )
        timings = [run_pinned(CHILD, str(csv), str(output)) for _ in range(args.repeats)]
        labelled = pl.read_parquet(output)
        assert labelled.height == len(reports)
        distinct = Path(folder) / "sentences.parquet"
        pl.DataFrame({"sentence": sorted(blind)}).write_parquet(distinct)
        cold = min(run_pinned(COLD, str(distinct))[0] for _ in range(args.repeats))
    inside = min(t for t, _ in timings)
    whole = min(t for _, t in timings)
    print(
        f"mtcxr label, best of {args.repeats}: {inside:.2f} s in main() = {len(reports) / inside:,.0f} reports/s; "
        f"{whole:.2f} s whole process = {len(reports) / whole:,.0f} reports/s"
    )
    per_new = cold / len(blind)  # seconds per sentence never seen before
    per_report = (whole - per_new * len(blind)) / len(reports)  # the rest: I/O, splitting, cache hits
    print(
        f"a sentence never seen before costs {per_new * 1e6:.0f} µs ({len(blind):,} distinct sentences labelled "
        f"cold in {cold:.2f} s); the rest costs {per_report * 1e6:.0f} µs per report, so a set with S new "
        f"sentences per report runs at about 1 / ({per_report * 1e6:.0f} µs + S × {per_new * 1e6:.0f} µs)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
