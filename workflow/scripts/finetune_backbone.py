from mtcxr.logs import log_to_file

log_to_file(snakemake.log[0])

from mtcxr.models.finetune import finetune_backbone  # noqa: E402

finetune_backbone(
    base_spec=snakemake.params.base_spec,
    pixel_shards=list(snakemake.input.pixels),
    studies_path=snakemake.input.studies,
    labels_path=snakemake.input.labels,
    output_dir=snakemake.output.folder,
    checkpoint_path=snakemake.params.checkpoint,
    variant_cfg=snakemake.params.variant,
    # checkpoint_minutes is not a param (changing it must not rerun the job): it comes from the config
    settings={**snakemake.params.settings, "checkpoint_minutes": snakemake.config["finetune"]["checkpoint_minutes"]},
    hidden_dim=snakemake.params.hidden_dim,
    supcon_temperature=snakemake.params.supcon_temperature,
    demo_dir=snakemake.params.demo_dir,
    frontal_only=snakemake.params.frontal_only,
    seed=snakemake.params.seed,
    threads=snakemake.threads,
)
