from mtcxr.logs import log_to_file

log_to_file(snakemake.log[0])

from mtcxr.summary.summarize import SummaryInputs, SummaryOutputs, summarize  # noqa: E402

summarize(
    inputs=SummaryInputs(
        metrics=list(snakemake.input.metrics),
        queries=list(snakemake.input.queries),
        rejects=list(snakemake.input.rejects),
        findings=list(snakemake.input.findings),
        xtra_auc=list(snakemake.input.xtra_auc),
        xtra_paired=list(snakemake.input.xtra_paired),
        generation=snakemake.input.get("generation"),
        generation_studies=snakemake.input.get("generation_studies"),
        zeroshot=list(snakemake.input.zeroshot),
    ),
    outputs=SummaryOutputs(
        parquet=snakemake.output.parquet,
        csv=snakemake.output.csv,
        md=snakemake.output.md,
        paired=snakemake.output.paired,
        findings=snakemake.output.findings,
        xtra=snakemake.output.xtra,
        zeroshot=snakemake.output.zeroshot,
    ),
    n_boot=snakemake.params.bootstrap,
    seed=snakemake.params.seed,
    examples=snakemake.params.examples,
)
