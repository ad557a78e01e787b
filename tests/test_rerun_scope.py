"""Rerun scope: after a complete run, a changed setting plans exactly the jobs whose output it changes.

Snakemake reruns a job whose params changed (every rerun trigger is on, as by default), so a rule's
params must hold the settings that change its output and nothing else: a seed's job uses its own
seed, and a setting that only decides how a job runs (how often it checkpoints) is not a param.
The dry runs read the session's complete tiny run in place: `snakemake -n` writes nothing, and the
params Snakemake recorded for each output are kept under that output's path, so a copy elsewhere
would have none to compare with.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tiny_workflow import run_snakemake

# tiny.yaml: backbone demo (zeroshot, multitask, xtra) and demo_ft (zeroshot, multitask), seeds [0, 1].
NEW_SEED = {
    f"{rule} backbone={backbone}, variant={variant}, seed=2"
    for rule in ("train_head", "project_embeddings", "build_index", "evaluate_variant")
    for backbone, variant in (("demo", "multitask"), ("demo", "xtra"), ("demo_ft", "multitask"))
}
EVERY_EVALUATION = {
    f"evaluate_variant backbone={backbone}, variant={variant}, seed={seed}"
    for backbone, variant, seed in (
        ("demo", "zeroshot", 0),
        ("demo", "multitask", 0),
        ("demo", "multitask", 1),
        ("demo", "xtra", 0),
        ("demo", "xtra", 1),
        ("demo_ft", "zeroshot", 0),
        ("demo_ft", "multitask", 0),
        ("demo_ft", "multitask", 1),
    )
}
# What reads summarize's outputs: the figures, each backbone's clinical-precision figure, the summary page.
AFTER_SUMMARY = {
    "summarize",
    "figures",
    "clinical_precision_figure backbone=demo",
    "clinical_precision_figure backbone=demo_ft",
    "summary_page",
    "all",
}


def planned_jobs(done) -> set[str]:
    """Each job of a dry run as "rule" or "rule wildcards" (as Snakemake prints them)."""
    jobs, rule, wildcards = [], None, ""
    for line in done.stdout.splitlines() + [""]:
        started = re.match(r"(?:local)?rule (\w+):$", line)
        if started or not line.startswith(" "):
            if rule:
                jobs.append(f"{rule} {wildcards}".strip())
            rule, wildcards = (started.group(1), "") if started else (None, "")
        elif line.startswith("    wildcards: "):
            wildcards = line.removeprefix("    wildcards: ")
    return set(jobs)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        # A third seed: its own heads, indexes and metrics, and what aggregates over seeds; not seeds 0
        # and 1, X-TRA, report generation or fine-tuning, which build on the first seed.
        (
            "train={seeds: [0, 1, 2]}",
            NEW_SEED | AFTER_SUMMARY | {"training_figure backbone=demo", "training_figure backbone=demo_ft"},
        ),
        # How often fine-tuning checkpoints changes no result (nothing planned: the run was complete).
        ("finetune={checkpoint_minutes: 5}", set()),
        # The example rows of summary.md: summarize only, and what reads its outputs.
        ("generation={examples: 2}", AFTER_SUMMARY),
        # How zero-shot AUCs count uncertain labels: every evaluation, not the embeddings the prompts are in.
        ("evaluate={zeroshot_classification: {uncertain: zeros}}", EVERY_EVALUATION | AFTER_SUMMARY),
        # A prompt: each backbone's prompt embeddings and every evaluation; no report embedding, head or index.
        (
            "evaluate={zeroshot_classification: {observations: {edema: {positive: [pulmonary edema]}}}}",
            EVERY_EVALUATION
            | AFTER_SUMMARY
            | {f"embed_prompts backbone={backbone}" for backbone in ("demo", "demo_ft")},
        ),
    ],
)
def test_a_changed_setting_plans_only_the_jobs_it_changes(tiny_results: Path, change: str, expected: set[str]):
    plan = run_snakemake(tiny_results, change, "--dry-run")
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert planned_jobs(plan) == expected, plan.stdout[-6000:]
