from mtcxr.logs import log_to_file

log_to_file(snakemake.log[0])

from mtcxr.summary.figures import generation_figure  # noqa: E402

generation_figure(metrics_path=snakemake.input.metrics, output=snakemake.output.figure)
