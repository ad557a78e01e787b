"""The workflow as a user drives it from the shell: README commands, config overrides, faults before any job."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tiny_workflow import REPO, snakemake

from mtcxr.preflight import RUN_MARKER, check_not_running, clear_running, mark_running


def jobs_planned(done: subprocess.CompletedProcess) -> dict[str, int]:
    """Rule -> job count from a dry run's job-stats table."""
    lines = done.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("job ") and "count" in line)
    counts = {}
    for line in lines[start + 2 :]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


def assert_message_alone(done: subprocess.CompletedProcess, message: str) -> None:
    """The run stopped with status 1 and `message`, and no traceback or Snakemake exception dump."""
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"mtcxr: error: {message}" in done.stderr, done.stderr
    for noise in ("Traceback", 'File "', "CalledProcessError", "Exception", "properties:"):
        assert noise not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) <= 3, done.stderr


def test_config_value_from_the_command_line(tmp_path: Path):
    """README: `snakemake --cores all --config results=results_small` keeps config.yaml for the rest."""
    done = snakemake("-n", "--cores", "all", "--config", f"results={tmp_path / 'results_small'}")
    assert done.returncode == 0, done.stderr
    counts = jobs_planned(done)
    # config.yaml: 6 variants, 5 of them trained with 3 seeds each and zeroshot once (16), and the
    # fine-tuned demo_ft with zeroshot + multitask (4); 2 shards
    assert counts["train_head"] == 20 and counts["preprocess_images"] == 2 and counts["finetune_backbone"] == 1
    assert counts["build_memory"] == 1 and counts["retrieve_neighbours"] == 3 and counts["train_xtra"] == 1
    assert counts["generate_reports"] == 8 and counts["generate_xtra_reports"] == 1 and counts["score_generation"] == 1
    assert str(tmp_path / "results_small") in done.stdout


def test_nested_config_value_is_typed(tmp_path: Path):
    done = snakemake("-n", "--cores", "all", "--config", f"results={tmp_path}", "train={epochs: 4}")
    assert done.returncode == 0, done.stderr
    assert "'4' is not of type" not in done.stderr


def test_partial_configfile_overrides_only_its_keys(tmp_path: Path):
    partial = tmp_path / "partial.yaml"
    partial.write_text(f"results: {tmp_path / 'r'}\nimages: {{shards: 3}}\n")
    done = snakemake("-n", "--cores", "all", "--configfile", str(partial))
    assert done.returncode == 0, done.stderr
    assert jobs_planned(done)["preprocess_images"] == 3


TWO_VARIANTS = "{zeroshot: {train: false}, clip: {losses: {clip: 1.0}}}"


@pytest.mark.parametrize("given_by", ["configfile", "config"])
def test_variants_are_replaced_by_the_last_source(tmp_path: Path, given_by: str):
    """`--configfile tiny.yaml v2.yaml` (Snakemake's form for several files) or `--config variants=...`:
    exactly the last source's variants run, not their union with tiny.yaml's."""
    if given_by == "configfile":
        v2 = tmp_path / "v2.yaml"
        v2.write_text(f"variants: {TWO_VARIANTS}\nxtra: {{variants: []}}\n")
        sources = ["--configfile", "tests/configs/tiny.yaml", str(v2), "--config", f"results={tmp_path}"]
    else:
        sources = ["--configfile", "tests/configs/tiny.yaml", "--config", f"results={tmp_path}"]
        sources += [f"variants={TWO_VARIANTS}", "xtra={variants: []}"]
    done = snakemake("-n", "--cores", "all", *sources)
    assert done.returncode == 0, done.stderr
    counts = jobs_planned(done)
    assert set(re.findall(r"variant=(\w+)", done.stdout)) == {"zeroshot", "clip"}
    assert counts["train_head"] == 3 and counts["evaluate_variant"] == 3  # zeroshot once, clip at seeds 0 and 1
    # tiny.yaml's demo_ft trains with multitask, which v2 drops; X-TRA is off
    assert not {"finetune_backbone", "build_memory", "train_xtra"} & set(counts)


def test_fine_tuning_is_switched_off_from_the_command_line(tmp_path: Path):
    done = snakemake("-n", "--cores", "all", "--config", f"results={tmp_path}", "finetune={backbones: {}}")
    assert done.returncode == 0, done.stderr
    counts = jobs_planned(done)
    assert "finetune_backbone" not in counts and "backbone=demo_ft" not in done.stdout
    assert counts["train_head"] == 16  # config.yaml's variants on demo alone: 5 trained x 3 seeds + zeroshot


def test_the_readme_switches_each_costly_stage_off(tmp_path: Path):
    """README, Config: every `--config` of the table of costly stages, given together as the README says."""
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("| to leave out | add |") :].split("\n\n")[0]
    values = re.findall(r"\| `--config (\w+=.*?)` \|", table)
    assert [value.split("=")[0] for value in values] == ["finetune", "xtra", "generation", "train"]
    done = snakemake(
        "-n", "--cores", "all", "--config", f"results={tmp_path}", *(value.replace("'", "") for value in values)
    )
    assert done.returncode == 0, done.stderr
    counts = jobs_planned(done)
    off = ("finetune_backbone", "build_memory", "train_xtra", "generate_baselines", "generate_reports")
    assert not set(off) & set(counts), counts
    assert counts["train_head"] == 6  # config.yaml's 6 variants on demo, one seed each


def test_a_repeated_configfile_flag_stops_before_any_job(tmp_path: Path):
    """Snakemake would keep only the second flag's file and drop tiny.yaml silently."""
    v2 = tmp_path / "v2.yaml"
    v2.write_text(f"variants: {TWO_VARIANTS}\nxtra: {{variants: []}}\n")
    done = snakemake("-n", "--configfile", "tests/configs/tiny.yaml", "--configfile", str(v2))
    assert_message_alone(done, "--configfile is given 2 times; Snakemake keeps only the last one's values")


def test_evaluate_target_rule(tmp_path: Path):
    """README: `snakemake --cores all evaluate` runs up to the metrics of every variant, not the summary."""
    done = snakemake("-n", "--cores", "all", "evaluate", "--config", f"results={tmp_path}")
    assert done.returncode == 0, done.stderr
    counts = jobs_planned(done)
    assert counts["evaluate_variant"] == 20 and counts["evaluate"] == 1
    assert "summarize" not in counts and "figures" not in counts


def test_a_file_target_runs_what_it_needs(tmp_path: Path):
    """README: `snakemake --cores all results/metrics/demo/multitask/seed0.parquet`: one run's metrics only."""
    readme = (REPO / "README.md").read_text()
    assert "`snakemake --cores all results/metrics/demo/multitask/seed0.parquet`" in readme
    done = snakemake(
        "-n", "--cores", "all", f"{tmp_path}/metrics/demo/multitask/seed0.parquet", "--config", f"results={tmp_path}"
    )
    assert done.returncode == 0, done.stderr
    counts = jobs_planned(done)
    assert counts["evaluate_variant"] == 1 and counts["train_head"] == 1 and counts["build_index"] == 1
    assert "summarize" not in counts and "finetune_backbone" not in counts


def test_generation_can_be_turned_off(tmp_path: Path):
    done = snakemake("-n", "--cores", "all", "--config", f"results={tmp_path}", "generation={enabled: false}")
    assert done.returncode == 0, done.stderr
    counts = jobs_planned(done)
    assert not {"generate_baselines", "generate_reports", "score_generation", "generation_figure"} & set(counts)
    assert counts["summarize"] == 1


def test_missing_java_stops_before_any_job(tmp_path: Path):
    done = snakemake("-n", "--config", f"results={tmp_path}", "generation={java: /no/such/java}")
    assert_message_alone(
        done,
        "generation.java is '/no/such/java', which is not an executable file; install it with "
        "`sudo apt-get install default-jre-headless`",
    )


def test_a_program_that_is_not_java_stops_before_any_job(tmp_path: Path):
    done = snakemake("-n", "--config", f"results={tmp_path}", "generation={java: /bin/true}")
    assert_message_alone(
        done,
        "generation.java is '/bin/true', which is not a Java runtime: `/bin/true -version` printed nothing, "
        'where a Java runtime prints e.g. `openjdk version "17.0.2"`',
    )


def manifest_run(tmp_path: Path, columns: dict[str, list[str]]) -> subprocess.CompletedProcess:
    """A dry run of configs/manifest.yaml on a manifest of 10 images (4 train, 2 validate, 4 test), one per study."""
    splits = ["train"] * 4 + ["validate"] * 2 + ["test"] * 4
    table = {"image_path": [f"i{i}.png" for i in range(10)], "split": splits, **columns}
    manifest = tmp_path / "manifest.csv"
    lines = [",".join(table)] + [",".join(values) for values in zip(*table.values())]
    manifest.write_text("\n".join(lines) + "\n")
    return snakemake(
        "-n",
        "--configfile",
        "configs/manifest.yaml",
        "--config",
        f"results={tmp_path / 'r'}",
        f"dataset={{kind: manifest, manifest: {manifest}, views: [PA, AP, UNKNOWN]}}",
        "backbones={demo: demo}",
    )


def test_a_manifest_with_only_a_report_column_generates_against_the_report(tmp_path: Path):
    """No findings, impression or view anywhere: the whole report is the reference (generation.reference:
    findings) and the images of unknown view are the queries."""
    done = manifest_run(tmp_path, {"report": [f"Report number {i}." for i in range(10)]})
    assert done.returncode == 0, done.stderr[-3000:]
    counts = jobs_planned(done)
    assert counts["generate_baselines"] == 1 and counts["score_generation"] == 1 and "error" not in done.stderr


def test_a_test_split_without_the_reference_section_stops_before_any_job(tmp_path: Path):
    findings = ["No effusion."] * 6 + [""] * 4  # the test split's findings are all empty
    done = manifest_run(tmp_path, {"view": ["PA"] * 10, "findings": findings, "impression": ["Normal."] * 10})
    assert_message_alone(
        done,
        f"report generation cannot run on the manifest {tmp_path / 'manifest.csv'}: none of the 4 test studies has "
        "a usable findings text (usable impression: 4, both: 4), so nothing to score; set generation.reference: "
        "impression or both, or set `generation: {enabled: false}` to skip report generation.",
    )


def test_schema_error_is_one_paragraph(tmp_path: Path):
    done = snakemake("-n", "--config", f"results={tmp_path}", "train={epochs: four}")
    assert_message_alone(done, "config key train.epochs: 'four' is not of type 'integer'")


def test_variant_with_no_loss_is_refused_before_any_job(tmp_path: Path):
    variants = "variants={zeroshot: {train: false}, xtra: {losses: {clip: 1.0}}, nothing: {losses: {clip: 0}}}"
    done = snakemake("-n", "--config", f"results={tmp_path}", variants)
    assert_message_alone(done, "variants.nothing trains (train: true) but has no loss with a weight above 0")


def test_preset_with_its_data_missing_stops_with_the_path(tmp_path: Path):
    done = snakemake("-n", "--configfile", "configs/iu_xray.yaml", "--config", f"results={tmp_path}")
    preset = yaml.safe_load((REPO / "configs/iu_xray.yaml").read_text())
    assert_message_alone(done, f"dataset.root {preset['dataset']['root']} is not a folder")


def test_empty_mimic_root_stops_before_any_job(tmp_path: Path):
    root = tmp_path / "mimic"
    root.mkdir()
    done = snakemake(
        "-n",
        "--configfile",
        "configs/mimic_cxr.yaml",
        "--config",
        f"results={tmp_path / 'r'}",
        f"dataset={{kind: mimic_cxr, root: {root}}}",
        "backbones={demo: demo}",
    )
    assert_message_alone(done, f"{root}/mimic-cxr-2.0.0-metadata.csv(.gz) does not exist")


def test_profile_resources_name_existing_rules():
    rules = set(snakemake("--list-rules").stdout.split())
    assert {"ingest", "evaluate", "evaluate_variant", "train_head"} <= rules
    for profile in ("profiles/slurm/profile.yaml", "profiles/slurm/config.v8+.yaml"):
        named = set(yaml.safe_load((REPO / profile).read_text())["set-resources"])
        assert named and named <= rules, named - rules


def test_every_rule_that_runs_code_declares_its_memory_and_time():
    """A cluster job gets what its rule asks for: without mem_mb and runtime it would get the profile's
    defaults, too little for some stages and a queue slot too large for most (benchmarks/scale.md)."""
    text = "\n".join(path.read_text() for path in sorted((REPO / "workflow/rules").glob("*.smk")))
    blocks = [block for block in re.split(r"\n(?=rule )", text) if block.startswith("rule ")]
    running = [block for block in blocks if re.search(r"^    (script|shell|run):", block, re.MULTILINE)]
    assert len(running) == 29
    for block in running:
        name = re.match(r"rule (\w+):", block).group(1)
        for resource in ("mem_mb", "runtime"):
            assert re.search(rf"^        {resource}=\d+,?$", block, re.MULTILINE), f"rule {name} declares no {resource}"


def test_gpu_is_asked_for_only_by_rules_that_use_it():
    text = "\n".join(path.read_text() for path in sorted((REPO / "workflow/rules").glob("*.smk")))
    blocks = re.split(r"\n(?=rule )", text)
    asking = {
        re.match(r"rule (\w+):", block).group(1) for block in blocks if block.startswith("rule ") and "gpu=1" in block
    }
    # Encoders, head and X-TRA training and fine-tuning run on the GPU; projecting, indexing and scoring need none.
    assert asking == {"embed_images", "embed_texts", "train_head", "finetune_backbone", "train_xtra"}


def test_a_live_run_on_the_same_results_is_named(tmp_path: Path):
    results = tmp_path / "results"
    # a live process whose command line names snakemake, standing in for a running workflow
    runner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "snakemake"])
    try:
        results.mkdir()
        host = subprocess.run(["hostname"], capture_output=True, text=True).stdout.strip()
        (results / RUN_MARKER).write_text(f"{host} {runner.pid}\n")
        done = snakemake("-n", "--config", f"results={results}")
        assert_message_alone(done, f"another Snakemake run (process {runner.pid} on {host}) is writing {results}")
        assert "Do not use --unlock or --rerun-incomplete" in done.stderr
    finally:
        runner.kill()
        runner.wait()
    time.sleep(0.1)
    done = snakemake("-n", "--config", f"results={results}")  # the marker of a dead run is ignored
    assert done.returncode == 0, done.stderr


def test_run_marker_lifecycle(tmp_path: Path):
    mark_running(tmp_path)
    assert (tmp_path / RUN_MARKER).is_file()
    check_not_running(tmp_path)  # our own marker does not stop us
    clear_running(tmp_path)
    assert not (tmp_path / RUN_MARKER).exists()


@pytest.mark.slow
def test_real_run_clears_its_marker(tiny_results: Path):
    """The session's shared run (tests/conftest.py) is a real run, to its end: its mark is gone."""
    assert (tiny_results / "data/studies.parquet").is_file() and not (tiny_results / RUN_MARKER).exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"report,view\nNormal.,PA\n", "{manifest} lacks column(s) ['image_path']"),
        (
            b"image_path,report,patient_id,split\na.png,Normal.,p1,train\nb.png,Effusion.,p1,test\n",
            "1 patient(s) in {manifest} appear in more than one split: p1 (test/train)",
        ),
        (b"image_path,report\n", "dataset.manifest {manifest} has a header (image_path, report) but no rows"),
        (b"", "dataset.manifest {manifest} is empty (0 bytes)"),
        (b"image_path,report\na.png,Caf\xe9 normal.\n", "{manifest} is not UTF-8: line 2 has the byte 0xe9"),
    ],
    ids=["no-image-path", "patient-in-two-splits", "header-only", "empty", "latin-1"],
)
def test_whole_manifest_faults_stop_before_any_job(tmp_path: Path, content: bytes, message: str):
    manifest = tmp_path / "manifest.csv"
    manifest.write_bytes(content)
    done = snakemake(
        "-n",
        "--configfile",
        "configs/manifest.yaml",
        "--config",
        f"results={tmp_path / 'r'}",
        f"dataset={{kind: manifest, manifest: {manifest}}}",
        "backbones={demo: demo}",
    )
    assert_message_alone(done, message.format(manifest=manifest))


def test_unknown_view_under_fail_stops_before_any_job(tmp_path: Path):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("image_path,report,view\na.png,Normal.,AP Supine\nb.png,Effusion.,Axial\n")
    done = snakemake(
        "-n",
        "--configfile",
        "configs/manifest.yaml",
        "--config",
        f"results={tmp_path / 'r'}",
        f"dataset={{kind: manifest, manifest: {manifest}}}",
        "backbones={demo: demo}",
        "on_bad_item=fail",
    )
    assert_message_alone(done, "2 item(s) rejected at ingest, first: b.png: ")
    assert "b.png: unknown view 'Axial': not a chest radiograph view" in done.stderr
