from mtcxr.logs import log_to_file

log_to_file(snakemake.log[0])

from mtcxr.xtra.train import XtraSettings, train_xtra  # noqa: E402

train_xtra(
    memory_dir=snakemake.input.memory,
    train_neighbours=snakemake.input.train,
    validate_neighbours=snakemake.input.validate,
    labels_path=snakemake.input.labels,
    output_dir=snakemake.params.output_dir,
    # the rule's `xtra` param: the config's `xtra:` keys that change the classifiers
    settings=XtraSettings.from_config(snakemake.params.xtra),
    seed=snakemake.params.seed,
    threads=snakemake.threads,
)
