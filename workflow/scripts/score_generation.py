from mtcxr.logs import log_to_file

log_to_file(snakemake.log[0])

from mtcxr.generation.score import score_generation  # noqa: E402

score_generation(
    generated_files=list(snakemake.input.reports),
    output_per_study=snakemake.output.per_study,
    output_metrics=snakemake.output.metrics,
    output_csv=snakemake.output.csv,
    java=snakemake.config["generation"]["java"],  # not a param: it does not change the scores
    uncertain=snakemake.params.uncertain,
    n_boot=snakemake.params.bootstrap,
    seed=snakemake.params.seed,
)
