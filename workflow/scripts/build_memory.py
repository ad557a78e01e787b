from mtcxr.logs import log_to_file

log_to_file(snakemake.log[0])

from mtcxr.xtra.memory import MemorySettings, build_memory  # noqa: E402

build_memory(
    projected_dir=snakemake.input.projected,
    labels_path=snakemake.input.labels,
    output_dir=snakemake.output.folder,
    settings=MemorySettings(
        index=snakemake.params.index,
        k=snakemake.params.k,
        frontal_only=snakemake.params.frontal_only,
        seed=snakemake.params.seed,
    ),
)
