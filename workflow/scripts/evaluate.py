from mtcxr.logs import log_to_file

log_to_file(snakemake.log[0])

from mtcxr.evaluate import evaluate_retrieval  # noqa: E402

evaluate_retrieval(
    index_dir=snakemake.input.index,
    labels_path=snakemake.input.labels,
    output_metrics=snakemake.output.metrics,
    output_queries=snakemake.output.queries,
    ks=snakemake.params.ks,
    precision_k=snakemake.params.precision_k,
    n_boot=snakemake.params.bootstrap,
    seed=snakemake.params.seed,
)
