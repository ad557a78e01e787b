from mtcxr.logs import log_to_file

log_to_file(snakemake.log[0])

from mtcxr.xtra.evaluate import evaluate_xtra  # noqa: E402

evaluate_xtra(
    memory_dir=snakemake.input.memory,
    test_neighbours=snakemake.input.test,
    labels_path=snakemake.input.labels,
    model_dir=snakemake.params.model_dir,
    output_auc=snakemake.output.auc,
    output_paired=snakemake.output.paired,
    output_scores=snakemake.output.scores,
    uncertain=snakemake.params.uncertain,
    n_boot=snakemake.params.bootstrap,
    seed=snakemake.params.seed,
)
