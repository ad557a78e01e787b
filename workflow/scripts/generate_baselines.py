from mtcxr.logs import log_to_file

log_to_file(snakemake.log[0])

from mtcxr.generation.generate import generate_baselines  # noqa: E402

generate_baselines(
    images_path=snakemake.input.image_table,
    studies_path=snakemake.input.studies,
    pixel_rejects=list(snakemake.input.pixel_rejects),
    section=snakemake.params.reference,
    seed=snakemake.params.seed,
    output=snakemake.output.reports,
    output_rejects=snakemake.output.rejects,
)
