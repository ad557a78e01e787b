from mtcxr.logs import log_to_file

log_to_file(snakemake.log[0])

from mtcxr.xtra.memory import build_memory  # noqa: E402

build_memory(
    image_embeddings=list(snakemake.input.images),
    text_embeddings=snakemake.input.texts,
    images_path=snakemake.input.image_table,
    studies_path=snakemake.input.studies,
    labels_path=snakemake.input.labels,
    head_weights=snakemake.input.weights,
    head_config=snakemake.input.config,
    output_dir=snakemake.output.folder,
    backbone_name=snakemake.wildcards.backbone,
    variant=snakemake.wildcards.variant,
    index_cfg=snakemake.params.index,
    k=snakemake.params.k,
    frontal_only=snakemake.params.frontal_only,
    seed=snakemake.params.seed,
)
