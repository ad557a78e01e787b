# mtcxr: chest X-ray image <-> report retrieval, from data ingestion to figures.
from snakemake.utils import min_version, validate

min_version("9.0")


# The demo config is the default; a --configfile on the command line replaces it whole, so a
# preset never inherits demo keys (such as extra variants) it did not ask for.
if not config:

    configfile: "config.yaml"



validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/labels.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"


# Cheap rules run on the submitting node even under a cluster profile.
localrules:
    all,
    summarize,
    figures,


rule all:
    input:
        final_outputs(),
    default_target: True
