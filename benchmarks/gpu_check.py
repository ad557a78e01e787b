"""Prove the CUDA paths in minutes: the tiny study with every GPU rule on `cuda`, its tables checked, and
the GPU rates a MIMIC-CXR run depends on, written into one markdown report.

Run through benchmarks/gpu_check.sh OUTDIR (which stops at once, in one line, where no GPU is visible).
Steps, each timed and reported with its output even when an earlier one failed:

1. the tiny study (tests/configs/tiny.yaml) with `embed`, `train`, `xtra` and `finetune` on `cuda`
   (bf16 autocast and gradient checkpointing where `auto` chooses them), then checks of what it wrote:
   every table present and finite, the embeddings spread, retrieval above chance, and the records that
   say where each stage ran (embedding metadata, finetune.json, the training logs);
2. embedding images/s of a BiomedCLIP-shaped ViT-B/16 at 224 px in bf16, batch 256 and 512
   (benchmarks/embed_throughput.py);
3. head-training steps/s at MIMIC's width (benchmarks/head_throughput.py);
4. fine-tuning images/s and peak GPU memory: heads only, the last block, all blocks
   (benchmarks/finetune_throughput.py).

Exit status: 0 when every step ran and every check held, 1 otherwise (the report says which).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from mtcxr.embedding_io import read_metadata

sys.path.insert(0, str(Path(__file__).parent))  # run as a script or loaded by a test
from demo_tables import summary_rows  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
# The rules that run a model on the GPU, each with the key that chooses its device.
CUDA_CONFIG = """\
embed: {device: cuda}
train: {device: cuda}
xtra: {device: cuda}
finetune: {device: cuda}
"""


@dataclass
class Step:
    name: str
    seconds: float = 0.0
    ok: bool = True
    lines: list[str] = field(default_factory=list)


def run(command: list[str], log: Path, timeout: int) -> tuple[int, str]:
    """Run `command` from the repository root; its output goes to `log` and comes back."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as stopped:
        code, output = 124, f"{stopped.stdout or ''}{stopped.stderr or ''}\nstopped after {timeout} s"
    log.write_text(output)
    return code, output


def table_lines(output: str) -> list[str]:
    """The markdown table (and machine line) a benchmark script prints, without its progress bars."""
    return [line for line in output.splitlines() if line.startswith(("|", "machine:", "peak"))]


def check_tiny_study(results: Path) -> list[str]:
    """What the CUDA run wrote, checked; returns the failures (empty: all held)."""
    failures = []
    summary_path = results / "metrics/summary.csv"
    if not summary_path.is_file():
        return [f"{summary_path} was not written"]
    summary = pl.read_csv(summary_path)
    values = summary["value"].drop_nulls().to_numpy()
    if not len(values) or not all(math.isfinite(v) for v in values):
        failures.append("summary.csv holds a missing or non-finite value")
    for backbone in ("demo", "demo_ft"):
        if summary.filter(pl.col("backbone") == backbone).is_empty():
            failures.append(f"summary.csv has no row for backbone {backbone}")

    def first(backbone: str, variant: str, task: str, metric: str, k: int | None = None) -> float | None:
        rows = summary_rows(summary, backbone, variant, task, metric, k).filter(
            (pl.col("n_seeds").fill_null(1) == 1) & (pl.col("seed").fill_null(0) == 0)  # zeroshot's or seed 0's
        )
        return rows["value"][0] if rows.height else None

    for backbone in ("demo", "demo_ft"):
        spread = first(backbone, "zeroshot", "embeddings", "image_mean_cosine")
        if spread is None or spread >= 0.9:
            failures.append(f"{backbone}'s image embeddings are collapsed or unmeasured (mean cosine {spread})")
    reports = pl.read_parquet(results / "index/demo/zeroshot/seed0/texts.parquet").height
    for variant in ("zeroshot", "multitask"):
        recall = first("demo", variant, "i2t", "recall", 5)
        if recall is None or recall <= 1.5 * 5 / reports:
            failures.append(f"demo/{variant} i2t R@5 {recall} is not above 1.5x chance ({5 / reports:.3f})")
    for name in ("xtra_auc.csv", "generation.csv", "finding_precision.csv"):
        if not (results / "metrics" / name).is_file():
            failures.append(f"metrics/{name} was not written")
    metadata = read_metadata(results / "embeddings/demo/texts.parquet")
    if metadata.get("precision") != "bf16":
        failures.append(f"the demo's text embeddings ran at {metadata.get('precision')}, not bf16 on cuda")
    facts = json.loads((results / "models/finetuned/demo_ft/finetune.json").read_text())
    if not (facts["device"].startswith("cuda") and facts["precision"] == "bf16" and facts["grad_checkpointing"]):
        failures.append(
            f"fine-tuning ran on {facts['device']} at {facts['precision']}, checkpointing {facts['grad_checkpointing']}"
        )
    for folder in ("train_head", "train_xtra"):
        logs = list((results / "logs" / folder).rglob("*.log"))
        if not logs or not any("cuda" in log.read_text() for log in logs):
            failures.append(f"no log under logs/{folder} says it ran on cuda")
    return failures


def main() -> int:
    out = Path(sys.argv[1]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    import torch

    gpu = torch.cuda.get_device_name()
    python = sys.executable
    steps = []

    step = Step("tiny study on cuda")
    started = time.perf_counter()
    (out / "cuda.yaml").write_text(CUDA_CONFIG)
    results = out / "tiny"
    code, output = run(
        [
            python,
            "-m",
            "snakemake",
            "--cores",
            str(os.cpu_count() or 2),
            "--configfile",
            "tests/configs/tiny.yaml",
            str(out / "cuda.yaml"),
            "--config",
            f"results={results}",
        ],
        out / "tiny_study.log",
        timeout=300,
    )
    step.seconds = time.perf_counter() - started
    failures = [f"snakemake exited {code}: see tiny_study.log"] if code else check_tiny_study(results)
    step.ok = not failures
    step.lines = [f"- {failure}" for failure in failures] or [
        "- every table written, finite and informative; bf16 and cuda recorded"
    ]
    steps.append(step)

    benchmarks = [
        (
            "embedding, BiomedCLIP-shaped ViT-B/16 at 224 px, bf16",
            [
                [
                    python,
                    str(BENCHMARKS / "embed_throughput.py"),
                    "--backbones",
                    "biomedclip-base",
                    "--images",
                    "4096",
                    "--texts",
                    "4096",
                    "--batch-size",
                    str(batch),
                    "--threads",
                    "16",
                ]
                for batch in (256, 512)
            ],
        ),
        (
            "head training, 512 dims, batch 256",
            [
                [
                    python,
                    str(BENCHMARKS / "head_throughput.py"),
                    "--pairs",
                    "65536",
                    "--device",
                    "cuda",
                    "--threads",
                    "16",
                ]
            ],
        ),
        (
            "fine-tuning BiomedCLIP-shaped, batch 64: heads only, last block, all blocks",
            [
                [
                    python,
                    str(BENCHMARKS / "finetune_throughput.py"),
                    "--backbones",
                    "biomedclip-base",
                    "--device",
                    "cuda",
                    "--batch-size",
                    "64",
                    "--steps",
                    "16",
                    "--warmup",
                    "4",
                    "--threads",
                    "16",
                    "--settings",
                    "0:0,1:0,12:12",
                ]
            ],
        ),
    ]
    for name, commands in benchmarks:
        step = Step(name)
        started = time.perf_counter()
        for i, command in enumerate(commands):
            code, output = run(command, out / f"{Path(command[1]).stem}-{i}.log", timeout=240)
            step.ok &= code == 0
            step.lines += (
                table_lines(output) if code == 0 else [f"- exited {code}: see {Path(command[1]).stem}-{i}.log"]
            )
        step.seconds = time.perf_counter() - started
        steps.append(step)

    report = [
        f"# GPU check: {gpu}",
        "",
        f"torch {torch.__version__}, CUDA {torch.version.cuda}, {os.cpu_count()} CPU cores; "
        f"commit {subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO, capture_output=True, text=True).stdout.strip() or 'unknown'}",
        "",
    ]
    for step in steps:
        report += [f"## {step.name}: {'ok' if step.ok else 'FAILED'} ({step.seconds:.0f} s)", "", *step.lines, ""]
    (out / "gpu_check.md").write_text("\n".join(report))
    print("\n".join(report))
    return 0 if all(step.ok for step in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
