from mtcxr.logs import log_to_file

log_to_file(snakemake.log[0])

from mtcxr.xtra.neighbours import NeighbourSettings, retrieve_neighbours  # noqa: E402

retrieve_neighbours(
    memory_dir=snakemake.input.memory,
    projected_dir=snakemake.input.projected,
    split=snakemake.wildcards.split,
    output=snakemake.output.neighbours,
    settings=NeighbourSettings(
        k=snakemake.params.k, index=snakemake.params.index, frontal_only=snakemake.params.frontal_only
    ),
)
