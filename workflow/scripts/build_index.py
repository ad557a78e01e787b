from mtcxr.logs import log_to_file

log_to_file(snakemake.log[0])

from mtcxr.retrieval.index import build_index  # noqa: E402

build_index(
    projected_dir=snakemake.input.projected,
    output_dir=snakemake.output.folder,
    demo_dir=snakemake.params.demo_dir,
    frontal_only=snakemake.params.frontal_only,
)
