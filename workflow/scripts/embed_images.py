from mtcxr.logs import log_to_file

log_to_file(snakemake.log[0])

from mtcxr.models.embed import embed_image_shard  # noqa: E402

embed_image_shard(
    pixels_path=snakemake.input.pixels,
    output=snakemake.output.embeddings,
    backbone_name=snakemake.wildcards.backbone,
    spec=snakemake.params.spec,
    demo_dir=snakemake.params.demo_dir,
    batch_size=snakemake.params.batch_size,
    device=snakemake.params.device,
    precision=snakemake.params.precision,
    threads=snakemake.threads,
)
