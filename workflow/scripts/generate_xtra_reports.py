from mtcxr.logs import log_to_file

log_to_file(snakemake.log[0])

from mtcxr.generation.generate import (  # noqa: E402
    GenerationSettings,
    QueryTables,
    XtraFolders,
    generate_by_xtra,
)

generate_by_xtra(
    XtraFolders(memory=snakemake.input.memory, test_neighbours=snakemake.input.test, model=snakemake.params.model_dir),
    tables=QueryTables(
        images=snakemake.input.image_table,
        studies=snakemake.input.studies,
        pixel_rejects=list(snakemake.input.pixel_rejects),
    ),
    settings=GenerationSettings(**snakemake.params.generation),
    output=snakemake.output.reports,
)
