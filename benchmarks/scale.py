"""How the whole study's cost grows with the data: run configs/scale.yaml at several sizes, then tabulate
Snakemake's per-job benchmark files, fit each rule's growth and project it to MIMIC-CXR's size.

    .venv/bin/python benchmarks/scale.py run 1 4 16        # results/scale/{1,4,16}x, one after another
    .venv/bin/python benchmarks/scale.py report results/scale/1x results/scale/4x results/scale/16x

`run FACTOR` runs the scale preset at FACTOR x the demo's 1,500 studies (patients and image shards scaled
as MIMIC's shape has them; the size file it writes beside the results folder says what was run) and
records the whole run's wall time in `run.json`. The demo backbone's pretraining does not depend on the
size: with `--reuse-backbone` a later size copies it from the first one's results (Snakemake keeps an
existing output), and the report counts that rule at the size it ran.

`report` writes benchmarks/scale.md (per rule and size: jobs, summed wall and CPU time, the largest peak
RSS of one job; each rule's fitted exponent of CPU time and of peak RSS against studies; the projection
to MIMIC's 227,835 studies beside the rule's declared `mem_mb` and `runtime`) and benchmarks/scale.png
(log-log cost against studies per rule).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]
DEMO_STUDIES = 1500
MIMIC_STUDIES = 227_835
MIMIC_PATIENTS_PER_STUDY = 65_379 / MIMIC_STUDIES
IMAGES_PER_STUDY = 1.6  # configs/scale.yaml: one frontal, a lateral in 60% of studies
IMAGES_PER_SHARD = 6_000  # configs/mimic_cxr.yaml: 64 shards of about 5,900 images
# Rules under this many CPU seconds at the largest size are start-up, not growth: no exponent is fitted.
FIT_FLOOR_SECONDS = 10.0
# What a rule must declare for a MIMIC run, from its projection: memory with half again as much as the
# projected peak (a job killed for memory loses its work), time with twice the projected longest job
# (cluster cores vary; a job past its limit is killed), rounded up to whole GB and to 5 minutes.
MEMORY_HEADROOM = 1.5
TIME_HEADROOM = 2.0
# The largest growth issue 22 allows a rule's CPU time over the sizes measured: studies^1.15 (n log n).
GROWTH_LIMIT = 1.15


def size_config(factor: float, results: Path) -> str:
    n = round(DEMO_STUDIES * factor)
    shards = max(2, math.ceil(n * IMAGES_PER_STUDY / IMAGES_PER_SHARD))
    return "\n".join(
        [
            f"# benchmarks/scale.py run {factor:g}: {n:,} studies",
            f"results: {results}",
            "dataset:",
            "  kind: synthetic",
            "  split_fractions: {train: 0.9777, validate: 0.0080, test: 0.0143}",
            "  synthetic:",
            f"    n_studies: {n}",
            f"    n_patients: {max(1, round(n * MIMIC_PATIENTS_PER_STUDY))}",
            "    image_size: 128",
            "    lateral_fraction: 0.6",
            f"images: {{shards: {shards}, cache_size: 128}}",
            "",
        ]
    )


def run_size(factor: float, root: Path, cores: int, backbone_from: Path | None) -> Path:
    results = root / f"{factor:g}x"
    config = root / f"{factor:g}x.yaml"
    root.mkdir(parents=True, exist_ok=True)
    config.write_text(size_config(factor, results))
    if backbone_from is not None and not (results / "models/demo_backbone").exists():
        shutil.copytree(backbone_from / "models/demo_backbone", results / "models/demo_backbone")
    command = [sys.executable, "-m", "snakemake", "--cores", str(cores)]
    command += ["--configfile", "configs/scale.yaml", str(config)]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO)
    facts = {
        "factor": factor,
        "studies": round(DEMO_STUDIES * factor),
        "exit_code": done.returncode,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "cores": cores,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "commit": commit.stdout.strip(),  # the code the run started with
        "backbone_copied_from": str(backbone_from) if backbone_from else None,
    }
    (results / "run.json").write_text(json.dumps(facts, indent=2) + "\n")
    if done.returncode:
        raise SystemExit(f"the {factor:g}x run failed (exit {done.returncode}); its logs are under {results}/logs")
    return results


# The last line of every job's log (mtcxr.logs.RESOURCES_FORMAT): its exact CPU time and peak RSS.
RESOURCES_LINE = re.compile(r"job resources: ([\d.]+) CPU s, peak RSS ([\d.]+) MB")


def logged_resources(log: Path) -> tuple[float, float] | None:
    """(CPU s, peak RSS MB) from the job's log, or None for a log written before jobs logged them."""
    if not log.is_file():
        return None
    found = RESOURCES_LINE.findall(log.read_text(errors="replace"))
    return (float(found[-1][0]), float(found[-1][1])) if found else None


def read_benchmarks(results: Path) -> pl.DataFrame:
    """One row per job: rule, wall s, CPU s, peak RSS MB, from results/benchmarks/<folder>[/...].tsv (the
    folder is the rule's name, or the one its `benchmark:` path gives: evaluate_variant writes `evaluate`).

    Wall time is Snakemake's, exact. CPU time and peak RSS come from the job's log (results/logs/, same
    path) where it has its resources line, exact; else from the benchmark file, which samples them every
    30 s after the first 30 s and so can miss a long job's last seconds (`exact` says which)."""
    rule_of = {folder: rule for rule, folder in benchmark_folders().items()}
    rows = []
    for path in sorted((results / "benchmarks").rglob("*.tsv")):
        relative = path.relative_to(results / "benchmarks")
        folder = relative.parts[0].removesuffix(".tsv")
        rule = rule_of.get(folder, folder)
        table = pl.read_csv(path, separator="\t", null_values=["-", "NA"])
        last = table.row(-1, named=True)  # a rerun appends; the last line is the run that made the output
        logged = logged_resources((results / "logs" / relative).with_suffix(".log"))
        cpu_s, rss_mb = logged or (float(last.get("cpu_time") or 0.0), float(last.get("max_rss") or 0.0))
        rows.append(
            {"rule": rule, "wall_s": float(last["s"]), "cpu_s": cpu_s, "rss_mb": rss_mb, "exact": logged is not None}
        )
    if not rows:
        raise SystemExit(f"{results}/benchmarks holds no benchmark file: is it a results folder of a run?")
    return pl.DataFrame(rows)


def rule_blocks() -> dict[str, str]:
    """Rule name -> the text of its block in workflow/rules/*.smk."""
    text = "\n".join(path.read_text() for path in sorted((REPO / "workflow/rules").glob("*.smk")))
    blocks = {}
    for block in re.split(r"\n(?=rule )", text):
        name = re.match(r"rule (\w+):", block)
        if name:
            blocks[name.group(1)] = block
    return blocks


def declared_resources() -> dict[str, dict[str, int]]:
    """Each rule's `mem_mb` and `runtime` as its rule block declares them."""
    return {
        rule: {key: int(value) for key, value in re.findall(r"\b(mem_mb|runtime)=(\d+)", block)}
        for rule, block in rule_blocks().items()
    }


def benchmark_folders() -> dict[str, str]:
    """Rule -> the first part of its `benchmark:` path under results/benchmarks/."""
    found = {}
    for rule, block in rule_blocks().items():
        match = re.search(r"benchmark:\s*\n\s*f?\"\{RESULTS\}/benchmarks/([A-Za-z0-9_]+)", block)
        if match:
            found[rule] = match.group(1)
    return found


def fit_exponent(studies: np.ndarray, cost: np.ndarray) -> float | None:
    """The slope of log(cost) against log(studies), least squares; None with fewer than two usable sizes."""
    keep = cost > 0
    if keep.sum() < 2:
        return None
    return float(np.polyfit(np.log(studies[keep]), np.log(cost[keep]), 1)[0])


def tabulate(runs: dict[int, pl.DataFrame]) -> pl.DataFrame:
    """Per rule and size: jobs, summed wall and CPU seconds, the largest job's peak RSS."""
    frames = []
    for studies, jobs in runs.items():
        frames.append(
            jobs.group_by("rule")
            .agg(
                jobs=pl.len(),
                wall_s=pl.col("wall_s").sum(),
                cpu_s=pl.col("cpu_s").sum(),
                job_wall_s=pl.col("wall_s").max(),
                rss_mb=pl.col("rss_mb").max(),
                exact=pl.col("exact").all(),
            )
            .with_columns(studies=pl.lit(studies))
        )
    return pl.concat(frames).sort("rule", "studies")


def cost_column(group: pl.DataFrame) -> str:
    """What a rule's growth is measured in: its exact CPU time where every size logged it, else its wall
    time (exact too; on a machine running only the study, jobs get the cores their `threads` ask for)."""
    return "cpu_s" if group["exact"].all() else "wall_s"


def project(table: pl.DataFrame) -> pl.DataFrame:
    """Each rule's exponents and its cost at MIMIC's size, from its largest measured size."""
    declared = declared_resources()
    rows = []
    for rule, group in table.group_by("rule", maintain_order=True):
        rule = rule[0]
        studies = group["studies"].to_numpy().astype(float)
        largest = group.row(-1, named=True)
        ratio = MIMIC_STUDIES / largest["studies"]
        cost = cost_column(group)
        cpu_exponent = fit_exponent(studies, group[cost].to_numpy())
        job_exponent = fit_exponent(studies, group["job_wall_s"].to_numpy())
        rss_exponent = fit_exponent(studies, group["rss_mb"].to_numpy())
        small = largest[cost] < FIT_FLOOR_SECONDS
        rows.append(
            {
                "rule": rule,
                "cost": "CPU" if cost == "cpu_s" else "wall",
                "cpu_exponent": None if small else cpu_exponent,
                "rss_exponent": None if small else rss_exponent,
                "mimic_cpu_h": largest[cost] * ratio ** max(cpu_exponent or 0.0, 0.0) / 3600,
                "mimic_job_wall_min": largest["job_wall_s"] * ratio ** max(job_exponent or 0.0, 0.0) / 60,
                "mimic_rss_mb": largest["rss_mb"] * ratio ** max(rss_exponent or 0.0, 0.0),
                "mem_mb": declared.get(rule, {}).get("mem_mb"),
                "runtime_min": declared.get(rule, {}).get("runtime"),
            }
        )
    projection = pl.DataFrame(rows)
    return projection.with_columns(
        mem_mb_needed=((pl.col("mimic_rss_mb") * MEMORY_HEADROOM / 1000).ceil() * 1000).cast(pl.Int64),
        runtime_needed=((pl.col("mimic_job_wall_min") * TIME_HEADROOM / 5).ceil().clip(1) * 5).cast(pl.Int64),
    )


def short_declarations(projection: pl.DataFrame) -> list[str]:
    """Rules whose declared `mem_mb` or `runtime` is below what their MIMIC projection needs, worded."""
    short = []
    for row in projection.iter_rows(named=True):
        for declared, needed, unit in (("mem_mb", "mem_mb_needed", "MB"), ("runtime_min", "runtime_needed", "min")):
            if row[declared] is None or row[declared] < row[needed]:
                short.append(f"{row['rule']}: {declared.removesuffix('_min')} {row[declared]} < {row[needed]} {unit}")
    return short


def growth_beyond_limit(table: pl.DataFrame) -> list[str]:
    """Rules whose CPU time grows faster than studies^GROWTH_LIMIT from the smallest size to the largest
    (rules under FIT_FLOOR_SECONDS at the largest size aside), worded."""
    beyond = []
    for rule, group in table.group_by("rule", maintain_order=True):
        first, last, cost = group.row(0, named=True), group.row(-1, named=True), cost_column(group)
        if last["studies"] == first["studies"] or last[cost] < FIT_FLOOR_SECONDS:
            continue
        allowed = (last["studies"] / first["studies"]) ** GROWTH_LIMIT
        if last[cost] > first[cost] * allowed:
            beyond.append(f"{rule[0]}: {cost} x{last[cost] / first[cost]:.1f} > x{allowed:.1f}")
    return beyond


def figure(table: pl.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    table = pl.concat(
        group.with_columns(cost=pl.col(cost_column(group))) for _, group in table.group_by("rule", maintain_order=True)
    )
    largest = table.group_by("rule").agg(pl.col("cost").max()).sort("cost", descending=True)
    shown = largest.filter(pl.col("cost") >= FIT_FLOOR_SECONDS)["rule"].to_list()
    for i, rule in enumerate(shown):
        group = table.filter(pl.col("rule") == rule)
        style = {"color": plt.cm.tab20(i % 20), "marker": "os^D"[i // 20 % 4], "label": rule}
        axes[0].plot(group["studies"], group["cost"], **style)
        axes[1].plot(group["studies"], group["rss_mb"], **style)
    sizes = np.array(sorted(table["studies"].unique().to_list()), dtype=float)
    if shown and len(sizes) > 1:  # what linear growth from the largest rule's smallest size would look like
        start = table.filter((pl.col("rule") == shown[0]) & (pl.col("studies") == sizes[0]))["cost"]
        if len(start):
            axes[0].plot(sizes, start[0] * sizes / sizes[0], "k--", linewidth=0.8, label="∝ studies")
    labels = ("seconds, all jobs of the rule (CPU where logged, else wall)", "peak RSS of the largest job, MB")
    for axis, label in zip(axes, labels):
        axis.set(xscale="log", yscale="log", xlabel="studies", ylabel=label)
        axis.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle(f"Cost against studies per rule (rules over {FIT_FLOOR_SECONDS:g} s at the largest size)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(table: pl.DataFrame, projection: pl.DataFrame, runs: list[dict]) -> str:
    def fmt(value, spec: str) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return format(round(value, 2) + 0.0 if isinstance(value, float) else value, spec)  # no "-0.00"

    sizes = sorted(table["studies"].unique().to_list())
    lines = ["# The whole study at growing scale", "", "Written by `benchmarks/scale.py report`. Runs:", ""]
    for run in runs:
        lines.append(
            f"- {run['studies']:,} studies: {run['wall_seconds'] / 60:.1f} min wall on {run['cores']} cores "
            f"({run['machine']}; commit {run['commit']})"
        )
    lines += [
        "",
        "## Per rule: wall and CPU seconds (all jobs), largest job's peak RSS (MB)",
        "",
        "Wall time is Snakemake's (exact). CPU time and peak RSS are exact where a job's log has its",
        "`job resources` line; runs older than that line have Snakemake's benchmark samples, which are taken",
        "every 30 s after a job's first 30 s and can miss a long job's last seconds (marked *).",
        "",
    ]
    header = "| rule | " + " | ".join(f"{n:,}: jobs, wall s, CPU s, RSS" for n in sizes) + " |"
    lines += [header, "|---|" + "---:|" * len(sizes)]
    for rule, group in table.group_by("rule", maintain_order=True):
        cells = []
        for n in sizes:
            row = group.filter(pl.col("studies") == n)
            if row.is_empty():
                cells.append("-")
                continue
            mark = "" if row["exact"][0] else "*"
            cells.append(
                f"{row['jobs'][0]}, {row['wall_s'][0]:,.0f}, {row['cpu_s'][0]:,.0f}{mark}, {row['rss_mb'][0]:,.0f}{mark}"
            )
        lines.append(f"| {rule[0]} | " + " | ".join(cells) + " |")
    if len(sizes) < 2:
        lines += ["", "One size measured: growth needs at least two, so nothing is fitted or projected yet.", ""]
        return "\n".join(lines)
    lines += [
        "",
        f"## Growth and the projection to MIMIC-CXR ({MIMIC_STUDIES:,} studies)",
        "",
        "Exponent b of cost ∝ studies^b (least squares over the sizes; rules under "
        f"{FIT_FLOOR_SECONDS:g} s at the largest size show none and project as constant). Cost is a rule's CPU "
        "time where every size logged it exactly, else its wall time (on a machine running only the study, "
        "a job has the cores its `threads` ask for). The projection scales the largest size by "
        "(227,835 / studies)^b.",
        "Every job pays a fixed start-up (interpreter, torch and open_clip imports: 3-8 s), so where that is",
        "most of a rule's cost at the sizes measured, b understates how its work grows and the projection",
        "is a floor; the larger the largest size, the closer b comes to the work's own growth.",
        "",
        f"Needed: what the rule must declare for a MIMIC run, {MEMORY_HEADROOM:g}x the projected peak RSS and "
        f"{TIME_HEADROOM:g}x the projected longest job, rounded up (`tests/test_scale_report.py` checks the "
        "declarations against it).",
        "",
        "| rule | cost | b | RSS b | MIMIC h | MIMIC longest job, min | MIMIC peak RSS MB "
        "| mem_mb: declared / needed | runtime: declared / needed |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in projection.sort("mimic_cpu_h", descending=True).iter_rows(named=True):
        lines.append(
            f"| {row['rule']} | {row['cost']} | {fmt(row['cpu_exponent'], '.2f')} | {fmt(row['rss_exponent'], '.2f')} "
            f"| {row['mimic_cpu_h']:,.1f} | {row['mimic_job_wall_min']:,.0f} | {row['mimic_rss_mb']:,.0f} "
            f"| {fmt(row['mem_mb'], ',')} / {row['mem_mb_needed']:,} "
            f"| {fmt(row['runtime_min'], ',')} / {row['runtime_needed']:,} |"
        )
    total = projection["mimic_cpu_h"].sum()
    lines += [
        "",
        f"Projected job time of the whole MIMIC study on this machine: {total:,.0f} h (all jobs, one after another).",
        "",
    ]
    short, beyond = short_declarations(projection), growth_beyond_limit(table)
    lines.append("Declared below need: " + ("; ".join(short) if short else "none") + ".")
    lines.append(
        f"Cost growing faster than studies^{GROWTH_LIMIT:g} from the smallest size to the largest: "
        + ("; ".join(beyond) if beyond else "none")
        + "."
    )
    lines.append("")
    lines += ["![cost against studies](scale.png)", ""]
    return "\n".join(lines)


def report(folders: list[Path], out: Path) -> None:
    runs, jobs = [], {}
    for folder in folders:
        facts_path = folder / "run.json"
        if not facts_path.is_file():
            raise SystemExit(f"{facts_path} is missing: report reads folders written by `benchmarks/scale.py run`")
        facts = json.loads(facts_path.read_text())
        runs.append(facts)
        jobs[facts["studies"]] = read_benchmarks(folder)
    table = tabulate(jobs)
    projection = project(table)
    out.mkdir(parents=True, exist_ok=True)
    table.write_csv(out / "scale.csv")
    figure(table, out / "scale.png")
    (out / "scale.md").write_text(markdown(table, projection, sorted(runs, key=lambda r: r["studies"])))
    print(f"wrote {out / 'scale.md'}, {out / 'scale.csv'} and {out / 'scale.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the scale preset at each factor")
    run.add_argument("factors", nargs="+", type=float)
    run.add_argument("--root", type=Path, default=REPO / "results/scale")
    run.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    run.add_argument("--reuse-backbone", action="store_true", help="later sizes copy the first's demo backbone")
    tab = commands.add_parser("report", help="tabulate the runs' benchmark files")
    tab.add_argument("folders", nargs="+", type=Path)
    tab.add_argument("--out", type=Path, default=REPO / "benchmarks")
    args = parser.parse_args()
    if args.command == "run":
        first = None
        for factor in args.factors:
            done = run_size(factor, args.root, args.cores, first if args.reuse_backbone else None)
            first = first or done
    else:
        report(args.folders, args.out)


if __name__ == "__main__":
    main()
