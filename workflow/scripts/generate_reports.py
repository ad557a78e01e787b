from mtcxr.logs import log_to_file

log_to_file(snakemake.log[0])

from mtcxr.generation.generate import GenerationSettings, QueryTables, generate_by_retrieval  # noqa: E402

generate_by_retrieval(
    projected_dir=snakemake.input.projected,
    tables=QueryTables(
        images=snakemake.input.image_table,
        studies=snakemake.input.studies,
        pixel_rejects=list(snakemake.input.pixel_rejects),
    ),
    settings=GenerationSettings(**snakemake.params.generation),
    output=snakemake.output.reports,
)
