from mtcxr.logs import log_to_file

log_to_file(snakemake.log[0])

from mtcxr.summary.figures import xtra_auc_figure  # noqa: E402

xtra_auc_figure(auc_files=list(snakemake.input.auc), output=snakemake.output.figure)
