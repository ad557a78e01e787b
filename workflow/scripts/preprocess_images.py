from mtcxr.logs import log_to_file

log_to_file(snakemake.log[0])

from mtcxr.data.preprocess import preprocess_shard  # noqa: E402

preprocess_shard(
    images_path=snakemake.input.images,
    output_pixels=snakemake.output.pixels,
    output_rejects=snakemake.output.rejects,
    shard=int(snakemake.wildcards.shard),
    n_shards=snakemake.params.shards,
    cache_size=snakemake.params.cache_size,
    max_pixels=snakemake.params.max_pixels,
    max_aspect_ratio=snakemake.params.max_aspect_ratio,
    on_bad_item=snakemake.params.on_bad_item,
    threads=snakemake.threads,
)
