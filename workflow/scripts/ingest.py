from mtcxr.logs import log_to_file

log_to_file(snakemake.log[0])

from mtcxr.data.ingest import ingest  # noqa: E402

ingest(
    dataset_cfg=snakemake.params.dataset,
    text_section=snakemake.params.text_section,
    seed=snakemake.params.seed,
    output_studies=snakemake.output.studies,
    output_images=snakemake.output.images,
    output_rejects=snakemake.output.rejects,
    output_labels=snakemake.output.dataset_labels,
    work_dir=snakemake.params.work_dir,
    on_bad_item=snakemake.params.on_bad_item,
)
