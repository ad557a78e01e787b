from mtcxr.logs import log_to_file

log_to_file(snakemake.log[0])

from mtcxr.summary.figures import retrieval_examples_figure  # noqa: E402

retrieval_examples_figure(
    index_dirs=dict(snakemake.params.index_dirs),
    pixel_files=list(snakemake.input.pixels),
    labels_path=snakemake.input.labels,
    output=snakemake.output.figure,
    n_queries=snakemake.params.queries,
    seed=snakemake.params.seed,
)
