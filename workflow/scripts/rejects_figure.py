import os

from mtcxr.logs import log_to_file

log_to_file(snakemake.log[0])

from mtcxr.summary.figures import rejects_figure  # noqa: E402

# Tables are named relative to the results folder (the figure's folder's parent): the figure prints
# these names when every table is empty.
results = os.path.dirname(os.path.dirname(snakemake.output.figure))
tables = {os.path.relpath(path, results): path for path in snakemake.input.rejects}
rejects_figure(reject_files=tables, output=snakemake.output.figure)
