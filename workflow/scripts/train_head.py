from mtcxr.logs import log_to_file

log_to_file(snakemake.log[0])

from mtcxr.models.train import HeadInputs, HeadOutputs, TrainSettings, train_head  # noqa: E402

train_head(
    inputs=HeadInputs(
        image_embeddings=list(snakemake.input.images),
        text_embeddings=snakemake.input.texts,
        images=snakemake.input.image_table,
        studies=snakemake.input.studies,
        labels=snakemake.input.labels,
    ),
    outputs=HeadOutputs(
        weights=snakemake.output.weights, config=snakemake.output.config, history=snakemake.output.history
    ),
    variant=snakemake.wildcards.variant,
    variant_cfg=snakemake.params.variant,
    # the rule's `train` param: the config's `train:` keys that change this job's heads
    settings=TrainSettings.from_config(snakemake.params.train),
    frontal_only=snakemake.params.frontal_only,
    seed=snakemake.params.seed,
    threads=snakemake.threads,
)
