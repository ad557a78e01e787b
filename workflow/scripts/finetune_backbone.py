from mtcxr.logs import log_to_file

log_to_file(snakemake.log[0])

from mtcxr.models.finetune import FinetuneInputs, FinetuneSettings, finetune_backbone  # noqa: E402

params = snakemake.params
finetune_backbone(
    base_spec=params.base_spec,
    inputs=FinetuneInputs(
        pixel_shards=list(snakemake.input.pixels), studies=snakemake.input.studies, labels=snakemake.input.labels
    ),
    output_dir=snakemake.output.folder,
    checkpoint_path=params.checkpoint,
    variant_cfg=params.variant,
    settings=FinetuneSettings.from_config(
        # Not params (changing them must not rerun the job): they come from the config.
        {
            **params.settings,
            **{key: snakemake.config["finetune"][key] for key in ("checkpoint_minutes", "grad_checkpointing")},
        },
        {"hidden_dim": params.hidden_dim, "supcon_temperature": params.supcon_temperature},
    ),
    demo_dir=params.demo_dir,
    frontal_only=params.frontal_only,
    seed=params.seed,
    threads=snakemake.threads,
)
