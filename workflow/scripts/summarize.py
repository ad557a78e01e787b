from mtcxr.logs import log_to_file

log_to_file(snakemake.log[0])

from mtcxr.summary.summarize import summarize  # noqa: E402

summarize(
    metric_files=list(snakemake.input.metrics),
    query_files=list(snakemake.input.queries),
    finding_files=list(snakemake.input.findings),
    output_findings=snakemake.output.findings,
    reject_files=list(snakemake.input.rejects),
    output_parquet=snakemake.output.parquet,
    output_csv=snakemake.output.csv,
    output_md=snakemake.output.md,
    output_paired=snakemake.output.paired,
    xtra_auc_files=list(snakemake.input.xtra_auc),
    xtra_paired_files=list(snakemake.input.xtra_paired),
    output_xtra=snakemake.output.xtra,
    generation_metrics=snakemake.input.get("generation"),
    generation_studies=snakemake.input.get("generation_studies"),
    examples=snakemake.params.examples,
    n_boot=snakemake.params.bootstrap,
    seed=snakemake.params.seed,
)
