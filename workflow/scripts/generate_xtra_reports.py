from mtcxr.logs import log_to_file

log_to_file(snakemake.log[0])

from mtcxr.generation.generate import generate_by_xtra  # noqa: E402

settings = snakemake.params.generation
generate_by_xtra(
    memory_dir=snakemake.input.memory,
    test_neighbours=snakemake.input.test,
    model_dir=snakemake.params.model_dir,
    images_path=snakemake.input.image_table,
    studies_path=snakemake.input.studies,
    pixel_rejects=list(snakemake.input.pixel_rejects),
    backbone=snakemake.wildcards.backbone,
    variant=snakemake.wildcards.variant,
    section=settings["reference"],
    choice=settings["choice"],
    k=settings["k"],
    output=snakemake.output.reports,
)
