from mtcxr.logs import log_to_file

log_to_file(snakemake.log[0])

from mtcxr.generation.generate import generate_by_retrieval  # noqa: E402

settings = snakemake.params.generation
generate_by_retrieval(
    image_embeddings=list(snakemake.input.images),
    text_embeddings=snakemake.input.texts,
    images_path=snakemake.input.image_table,
    studies_path=snakemake.input.studies,
    pixel_rejects=list(snakemake.input.pixel_rejects),
    labels_path=snakemake.input.labels,
    head_weights=snakemake.input.weights,
    head_config=snakemake.input.config,
    backbone=snakemake.wildcards.backbone,
    variant=snakemake.wildcards.variant,
    section=settings["reference"],
    choice=settings["choice"],
    k=settings["k"],
    output=snakemake.output.reports,
)
