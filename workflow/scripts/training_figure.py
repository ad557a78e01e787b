from mtcxr.logs import log_to_file

log_to_file(snakemake.log[0])

from mtcxr.summary.figures import training_figure  # noqa: E402

training_figure(
    histories=dict(snakemake.params.histories), output=snakemake.output.figure, backbone=snakemake.wildcards.backbone
)
