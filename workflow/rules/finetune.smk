# Fine-tuning the backbone itself (mtcxr.models.finetune): each `finetune.backbones` entry trains the last
# blocks of its base's towers with heads under a variant's losses and becomes a backbone of its own.


rule finetune_backbone:
    input:
        pixels=expand(f"{RESULTS}/data/pixels/shard-{{shard}}.parquet", shard=SHARDS),
        studies=f"{RESULTS}/data/studies.parquet",
        labels=f"{RESULTS}/labels/labels.parquet",
        base=finetune_base_input,
    output:
        folder=directory(f"{RESULTS}/models/finetuned/{{finetuned}}"),
    log:
        f"{RESULTS}/logs/finetune_backbone/{{finetuned}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/finetune_backbone/{{finetuned}}.tsv"
    conda:
        ENV
    threads: 2
    # A GPU job on a cluster; `runtime` is the job's time limit: past it the job is killed, and the
    # next run of the workflow resumes from the last checkpoint (README, Fine-tuning the backbone).
    resources:
        mem_mb=16000,
        runtime=720,
        gpu=1,
    params:
        base_spec=finetune_base_spec,
        demo_dir=finetune_demo_dir,
        variant=finetune_variant_config,
        settings=finetune_settings,
        hidden_dim=config["train"]["hidden_dim"],
        supcon_temperature=config["train"]["supcon_temperature"],
        frontal_only=config["images"]["frontal_only"],
        seed=config["seed"],
        # Not an output: Snakemake would delete it when the job fails, and it must outlive a killed job.
        checkpoint=lambda wildcards: f"{RESULTS}/checkpoints/finetune_backbone/{wildcards.finetuned}.pt",
    script:
        "../scripts/finetune_backbone.py"
