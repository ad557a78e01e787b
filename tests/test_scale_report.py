"""benchmarks/scale.py: the size files it runs the scale preset with are valid configs of MIMIC's shape, and
its report reads Snakemake's benchmark files, fits each rule's growth and projects it as stated."""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest
import yaml
from tiny_workflow import load_benchmark

from mtcxr.config import run_config
from mtcxr.logs import RESOURCES_FORMAT

REPO = Path(__file__).resolve().parents[1]
HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


@pytest.fixture(scope="module")
def scale():
    return load_benchmark("scale")


def test_size_files_scale_studies_patients_and_shards_as_mimic(scale, tmp_path: Path):
    size = tmp_path / "16x.yaml"
    size.write_text(scale.size_config(16, tmp_path / "16x"))
    config = run_config(
        default_file=REPO / "config.yaml",
        configfiles=[REPO / "configs/scale.yaml", size],
        command_line={},
        schema_file=REPO / "workflow/schemas/config.schema.yaml",
    )
    synthetic = config["dataset"]["synthetic"]
    assert synthetic["n_studies"] == 24_000 and synthetic["n_patients"] == 6_887  # MIMIC: 0.287 per study
    assert config["images"]["shards"] == 7  # 38,400 images at ~6,000 per shard
    assert config["dataset"]["split_fractions"]["train"] == pytest.approx(0.9777)
    # The rest of the study is the demo's: every variant, 3 seeds, X-TRA, generation and fine-tuning.
    assert len(config["variants"]) == 6 and config["train"]["seeds"] == [0, 1, 2]
    assert config["finetune"]["backbones"] and config["xtra"]["variants"] == ["xtra"]
    assert config["results"] == str(tmp_path / "16x")
    assert yaml.safe_load((REPO / "configs/scale.yaml").read_text())["dataset"]["synthetic"]["lateral_fraction"] == 0.6


def write_run(
    folder: Path, studies: int, jobs: dict[str, list[tuple[float, float, float]]], logged: tuple[str, ...] = ()
) -> Path:
    """A results folder as `scale.py run` leaves it: benchmark files (wall s, RSS MB, CPU s) and run.json.
    The jobs of the rules in `logged` also have a log ending in its resources line (mtcxr.logs), which
    gives CPU and RSS twice the benchmark file's, as a sampled file may under-record them."""
    for rule, rows in jobs.items():
        for i, (wall, rss, cpu) in enumerate(rows):
            path = folder / "benchmarks" / rule / f"job{i}.tsv"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(HEADER + f"{wall}\t0:00:01\t{rss}\t1\t1\t1\t0\t0\t50\t{cpu}\n")
            if rule in logged:
                log = folder / "logs" / rule / f"job{i}.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                line = RESOURCES_FORMAT % (2 * cpu, 2 * rss, wall)
                log.write_text(
                    f"2026-12-07 10:00:00,000 INFO mtcxr.x: working\n2026-12-07 10:00:09,000 INFO mtcxr: {line}\n"
                )
    facts = {"studies": studies, "wall_seconds": 600.0, "cores": 2, "machine": "test", "commit": "abc"}
    (folder / "run.json").write_text(json.dumps(facts))
    return folder


def test_report_fits_each_rules_growth_and_projects_it(scale, tmp_path: Path):
    # train_head: CPU linear in the studies, two jobs; evaluate_variant: quadratic; summarize: start-up only.
    runs = [
        write_run(
            tmp_path / f"{n}",
            n,
            {
                "train_head": [(n / 100, 500 + n / 10, n / 100)] * 2,
                "evaluate": [((n / 1000) ** 2, 800, (n / 1000) ** 2)],
                "summarize": [(3.0, 150, 2.5)],
            },
            logged=("train_head",),
        )
        for n in (1500, 6000, 24_000)
    ]
    out = tmp_path / "out"
    scale.report(runs, out)
    table = scale.tabulate({n: scale.read_benchmarks(tmp_path / f"{n}") for n in (1500, 6000, 24_000)})
    projection = {row["rule"]: row for row in scale.project(table).iter_rows(named=True)}
    assert projection["train_head"]["cpu_exponent"] == pytest.approx(1.0)
    assert projection["evaluate_variant"]["cpu_exponent"] == pytest.approx(2.0)
    assert projection["summarize"]["cpu_exponent"] is None  # 3 s: start-up, not growth
    # Logged rules are measured in their exact CPU time (the log's, not the sampled file's), the others in
    # Snakemake's wall time.
    assert [projection[rule]["cost"] for rule in ("train_head", "evaluate_variant", "summarize")] == [
        "CPU",
        "wall",
        "wall",
    ]
    ratio = scale.MIMIC_STUDIES / 24_000
    assert projection["train_head"]["mimic_cpu_h"] == pytest.approx(2 * 480 * ratio / 3600)
    assert projection["evaluate_variant"]["mimic_cpu_h"] == pytest.approx(24.0**2 * ratio**2 / 3600)
    assert projection["summarize"]["mimic_cpu_h"] == pytest.approx(3.0 / 3600)
    rss_exponent = projection["train_head"]["rss_exponent"]
    assert 0 < rss_exponent < 1 and projection["train_head"]["mimic_rss_mb"] == pytest.approx(
        5800 * ratio**rss_exponent
    )
    # Rules by name (evaluate_variant's benchmark files are under benchmarks/evaluate), with the resources
    # their rule blocks declare.
    assert projection["train_head"]["mem_mb"] == scale.declared_resources()["train_head"]["mem_mb"] > 0
    assert projection["evaluate_variant"]["runtime_min"] == scale.declared_resources()["evaluate_variant"]["runtime"]
    text = (out / "scale.md").read_text()
    assert (
        "| evaluate_variant | wall | 2.00 | 0.00 |" in text
        and "| train_head | CPU | 1.00 |" in text
        and "| summarize | wall | - |" in text
    )
    assert "1,500: jobs, wall s, CPU s, RSS" in text
    assert "| train_head | 2, 30, 60, 1,300 | 2, 120, 240, 2,200 | 2, 480, 960, 5,800 |" in text
    assert "| evaluate_variant | 1, 2, 2*, 800* |" in text
    assert (out / "scale.png").read_bytes()[:4] == b"\x89PNG" and (out / "scale.csv").is_file()
    assert not math.isnan(projection["evaluate_variant"]["mimic_job_wall_min"])


def test_one_size_fits_and_projects_nothing(scale, tmp_path: Path):
    run = write_run(tmp_path / "1500", 1500, {"train_head": [(15.0, 650, 15.0)]})
    scale.report([run], tmp_path / "out")
    text = (tmp_path / "out/scale.md").read_text()
    assert "| train_head | 1, 15, 15*, 650* |" in text
    assert "One size measured" in text and "MIMIC CPU h" not in text


def test_report_names_a_folder_that_is_not_a_run(scale, tmp_path: Path):
    with pytest.raises(SystemExit, match=r"run.json is missing: report reads folders written by"):
        scale.report([tmp_path], tmp_path / "out")


def test_declared_resources_cover_the_measured_projection(scale):
    """The committed measurements (benchmarks/scale.csv, written by `scale.py report`) against the rules and
    the Slurm profiles: every rule declares at least what its MIMIC projection needs, every job of the
    largest size measured stayed inside its rule's `mem_mb`, and no rule's CPU time grew faster than
    studies^1.15. A change that makes a stage costlier shows here once the scale runs are repeated."""
    table = pl.read_csv(REPO / "benchmarks/scale.csv").sort("rule", "studies", maintain_order=True)
    assert table["studies"].n_unique() >= 2
    projection = scale.project(table)
    assert scale.short_declarations(projection) == []
    assert scale.growth_beyond_limit(table) == []
    declared = scale.declared_resources()
    largest = table.filter(pl.col("studies") == table["studies"].max())
    for rule, rss_mb in largest.select("rule", "rss_mb").iter_rows():
        assert rss_mb <= declared[rule]["mem_mb"], rule
    # The Slurm profiles set resources for the GPU rules, for BiomedCLIP on a GPU node; they replace the
    # rules'. Host memory does not shrink on a GPU node: never below what the projection needs. Their
    # runtimes are for the GPU, which these CPU runs cannot project (benchmarks/scale.md).
    needed = {row["rule"]: row["mem_mb_needed"] for row in projection.iter_rows(named=True)}
    for profile in ("profiles/slurm/profile.yaml", "profiles/slurm/config.v8+.yaml"):
        for rule, resources in yaml.safe_load((REPO / profile).read_text())["set-resources"].items():
            assert resources.get("mem_mb", declared[rule]["mem_mb"]) >= needed[rule], (profile, rule)


def test_every_job_logs_its_exact_resources(scale, tiny_results: Path):
    """Every job of the shared tiny run ends its log with its CPU time and peak RSS (mtcxr.logs), and the
    report reads them in place of the benchmark files' samples."""
    jobs = scale.read_benchmarks(tiny_results)
    assert len(jobs) > 60 and jobs["exact"].all()
    assert (jobs["cpu_s"] > 0.1).all() and jobs["rss_mb"].is_between(50, 8000).all()
    # A Python job with numpy and polars loaded holds at least ~60 MB; the pretraining job trains a model.
    pretrain = jobs.filter(pl.col("rule") == "pretrain_demo_backbone").row(0, named=True)
    assert pretrain["cpu_s"] > 10 and pretrain["rss_mb"] > 200
