from mtcxr.logs import log_to_file

log_to_file(snakemake.log[0])

from mtcxr.summary.figures import clinical_precision_figure  # noqa: E402

clinical_precision_figure(
    summary_path=snakemake.input.summary,
    backbone=snakemake.wildcards.backbone,
    k=snakemake.params.k,
    output=snakemake.output.figure,
)
