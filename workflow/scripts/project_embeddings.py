from mtcxr.logs import log_to_file

log_to_file(snakemake.log[0])

from mtcxr.models.project import EmbeddingInputs, project_embeddings  # noqa: E402

project_embeddings(
    EmbeddingInputs(
        image_embeddings=list(snakemake.input.images),
        text_embeddings=snakemake.input.texts,
        images=snakemake.input.image_table,
        studies=snakemake.input.studies,
        labels=snakemake.input.labels,
    ),
    head_weights=snakemake.input.weights,
    head_config=snakemake.input.config,
    output_dir=snakemake.output.folder,
    run={
        "backbone": snakemake.wildcards.backbone,
        "variant": snakemake.wildcards.variant,
        "seed": int(snakemake.wildcards.seed),
    },
)
