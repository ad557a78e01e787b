"""benchmarks/scale.py: the size files it runs the scale preset with are valid configs of MIMIC's shape, and
its report reads Snakemake's benchmark files, fits each rule's growth and projects it as stated."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from tiny_workflow import load_benchmark

from mtcxr.config import run_config

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


def write_run(folder: Path, studies: int, jobs: dict[str, list[tuple[float, float, float]]]) -> Path:
    """A results folder as `scale.py run` leaves it: benchmark files (wall s, RSS MB, CPU s) and run.json."""
    for rule, rows in jobs.items():
        for i, (wall, rss, cpu) in enumerate(rows):
            path = folder / "benchmarks" / rule / f"job{i}.tsv"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(HEADER + f"{wall}\t0:00:01\t{rss}\t1\t1\t1\t0\t0\t50\t{cpu}\n")
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
        )
        for n in (1500, 6000, 24_000)
    ]
    out = tmp_path / "out"
    scale.report(runs, out)
    table = scale.tabulate({n: scale.read_benchmarks(tmp_path / f"{n}") for n in (1500, 6000, 24_000)})
    projection = {row["rule"]: row for row in scale.project(table).iter_rows(named=True)}
    assert projection["train_head"]["cpu_exponent"] == pytest.approx(1.0)
    assert projection["evaluate_variant"]["cpu_exponent"] == pytest.approx(2.0)
    assert projection["summarize"]["cpu_exponent"] is None  # 2.5 CPU s: start-up, not growth
    ratio = scale.MIMIC_STUDIES / 24_000
    assert projection["train_head"]["mimic_cpu_h"] == pytest.approx(2 * 240 * ratio / 3600)
    assert projection["evaluate_variant"]["mimic_cpu_h"] == pytest.approx(24.0**2 * ratio**2 / 3600)
    assert projection["summarize"]["mimic_cpu_h"] == pytest.approx(2.5 / 3600)
    rss_exponent = projection["train_head"]["rss_exponent"]
    assert 0 < rss_exponent < 1 and projection["train_head"]["mimic_rss_mb"] == pytest.approx(
        2900 * ratio**rss_exponent
    )
    # Rules by name (evaluate_variant's benchmark files are under benchmarks/evaluate), with the resources
    # their rule blocks declare.
    assert projection["train_head"]["mem_mb"] == scale.declared_resources()["train_head"]["mem_mb"] > 0
    assert projection["evaluate_variant"]["runtime_min"] == scale.declared_resources()["evaluate_variant"]["runtime"]
    text = (out / "scale.md").read_text()
    assert (
        "| evaluate_variant | 2.00 | 0.00 |" in text and "| train_head | 1.00 |" in text and "| summarize | - |" in text
    )
    assert "1,500: jobs, CPU s, RSS" in text and "| train_head | 2, 30, 650 | 2, 120, 1,100 | 2, 480, 2,900 |" in text
    assert (out / "scale.png").read_bytes()[:4] == b"\x89PNG" and (out / "scale.csv").is_file()
    assert not math.isnan(projection["evaluate_variant"]["mimic_job_wall_min"])


def test_one_size_fits_and_projects_nothing(scale, tmp_path: Path):
    run = write_run(tmp_path / "1500", 1500, {"train_head": [(15.0, 650, 15.0)]})
    scale.report([run], tmp_path / "out")
    text = (tmp_path / "out/scale.md").read_text()
    assert "| train_head | 1, 15, 650 |" in text
    assert "One size measured" in text and "MIMIC CPU h" not in text


def test_report_names_a_folder_that_is_not_a_run(scale, tmp_path: Path):
    with pytest.raises(SystemExit, match=r"run.json is missing: report reads folders written by"):
        scale.report([tmp_path], tmp_path / "out")
