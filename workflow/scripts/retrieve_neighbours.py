from mtcxr.logs import log_to_file

log_to_file(snakemake.log[0])

from mtcxr.xtra.neighbours import retrieve_neighbours  # noqa: E402

retrieve_neighbours(
    memory_dir=snakemake.input.memory,
    image_embeddings=list(snakemake.input.images),
    text_embeddings=snakemake.input.texts,
    images_path=snakemake.input.image_table,
    studies_path=snakemake.input.studies,
    labels_path=snakemake.input.labels,
    head_weights=snakemake.input.weights,
    head_config=snakemake.input.config,
    split=snakemake.wildcards.split,
    k=snakemake.params.k,
    index_cfg=snakemake.params.index,
    output=snakemake.output.neighbours,
    frontal_only=snakemake.params.frontal_only,
)
