from mtcxr.logs import log_to_file

log_to_file(snakemake.log[0])

from mtcxr.models.train import train_head  # noqa: E402

train_head(
    image_embeddings=list(snakemake.input.images),
    text_embeddings=snakemake.input.texts,
    images_path=snakemake.input.image_table,
    studies_path=snakemake.input.studies,
    labels_path=snakemake.input.labels,
    output_weights=snakemake.output.weights,
    output_config=snakemake.output.config,
    output_history=snakemake.output.history,
    variant=snakemake.wildcards.variant,
    variant_cfg=snakemake.params.variant,
    train_cfg=snakemake.params.train,
    frontal_only=snakemake.params.frontal_only,
    seed=snakemake.params.seed,
    threads=snakemake.threads,
)
