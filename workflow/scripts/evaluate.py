from mtcxr.logs import log_to_file

log_to_file(snakemake.log[0])

from mtcxr.retrieval.evaluate import evaluate_retrieval  # noqa: E402

evaluate_retrieval(
    index_dir=snakemake.input.index,
    labels_path=snakemake.input.labels,
    output_metrics=snakemake.output.metrics,
    output_queries=snakemake.output.queries,
    output_findings=snakemake.output.findings,
    ks=snakemake.params.ks,
    precision_k=snakemake.params.precision_k,
    n_boot=snakemake.params.bootstrap,
    seed=snakemake.params.seed,
    protocol_names=list(snakemake.params.protocols),
    cxr_clip_images=snakemake.params.cxr_clip_images,
    per_class=snakemake.params.label_5x200["per_class"],
    sample_seed=snakemake.params.label_5x200["seed"],
)
