from mtcxr.logs import log_to_file

log_to_file(snakemake.log[0])

from mtcxr.labels.extract import extract_labels  # noqa: E402

extract_labels(
    studies_path=snakemake.input.studies,
    dataset_labels_path=snakemake.input.dataset_labels,
    output_labels=snakemake.output.labels,
    output_agreement=snakemake.output.agreement,
    source=snakemake.params.source,
)
