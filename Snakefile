# mtcxr: chest X-ray image <-> report retrieval, from data ingestion to figures.
from snakemake.utils import min_version

import sys

from mtcxr.config import check_repeated_flags, run_config
from mtcxr.preflight import check_not_running, stop_on_input_error
from mtcxr.reproducibility import pin_cpu_kernels

min_version("9.0")

# Every job computes with AVX2 kernels on any x86-64 CPU, so a CPU run gives the same bits on other
# machines (mtcxr.reproducibility; docs/methods.md, Reproducibility). Job processes inherit the environment.
pin_cpu_kernels()


# config.yaml (the demo) is the default; each --configfile, then --config, overrides only the
# keys it names. `backbones`, `variants`, `finetune.backbones` and a `dataset` that sets `kind` are
# replaced whole by the last source naming them, so a preset gets exactly what it lists
# (mtcxr.config). The schema fills what is left out.
configfile: "config.yaml"


with stop_on_input_error():
    if workflow.is_main_process:
        # Snakemake keeps only the last of repeated --configfile/--config flags: say so, not drop them.
        check_repeated_flags(sys.argv)
    resolved = run_config(
        default_file=f"{workflow.basedir}/config.yaml",
        configfiles=workflow.config_settings.configfiles,
        command_line=workflow.config_settings.config,
        schema_file=f"{workflow.basedir}/workflow/schemas/config.schema.yaml",
    )
    config.clear()
    config.update(resolved)
    if workflow.is_main_process:
        check_not_running(config["results"])


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/labels.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/retrieval.smk"
include: "workflow/rules/xtra.smk"
include: "workflow/rules/generation.smk"
include: "workflow/rules/summary.smk"


# `snakemake --report`: the study described, with this run's settings (workflow/report/workflow.rst).
report: "workflow/report/workflow.rst"


# Cheap rules run on the submitting node even under a cluster profile.
localrules:
    all,
    evaluate,
    summarize,
    figures,
    xtra_figure,
    generation_figure,
    training_figure,
    clinical_precision_figure,
    retrieval_examples_figure,
    rejects_figure,
    summary_page,


rule all:
    default_target: True
    input:
        final_outputs(),


onstart:
    mark_running(RESULTS)


onsuccess:
    clear_running(RESULTS)


onerror:
    clear_running(RESULTS)
