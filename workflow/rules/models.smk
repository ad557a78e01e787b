# Models: the demo backbone, embeddings of every image and report (mtcxr.models.embed), the heads of
# each variant and seed (mtcxr.models.train) and fine-tuned backbones (mtcxr.models.finetune).


rule pretrain_demo_backbone:
    output:
        folder=directory(DEMO_DIR),
    log:
        f"{RESULTS}/logs/pretrain_demo_backbone.log",
    benchmark:
        f"{RESULTS}/benchmarks/pretrain_demo_backbone.tsv"
    conda:
        ENV
    # A tiny model trained on the CPU. Floating-point sums depend on the thread count, so every rule
    # that trains or embeds declares 2: any machine giving Snakemake 2+ cores computes the same bits.
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        seed=config["seed"],
        options=config["demo_backbone"],
    script:
        "../scripts/pretrain_demo_backbone.py"


rule embed_images:
    input:
        pixels=f"{RESULTS}/data/pixels/shard-{{shard}}.parquet",
        backbone=demo_dir_input,
    output:
        embeddings=f"{RESULTS}/embeddings/{{backbone}}/images-{{shard}}.parquet",
    log:
        f"{RESULTS}/logs/embed_images/{{backbone}}/shard-{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/embed_images/{{backbone}}/shard-{{shard}}.tsv"
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1,
    params:
        spec=backbone_spec,
        demo_dir=demo_dir_param,
        batch_size=config["embed"]["batch_size"],
        device=config["embed"]["device"],
        precision=config["embed"]["precision"],
    script:
        "../scripts/embed_images.py"


rule embed_texts:
    input:
        studies=f"{RESULTS}/data/studies.parquet",
        backbone=demo_dir_input,
    output:
        embeddings=f"{RESULTS}/embeddings/{{backbone}}/texts.parquet",
    log:
        f"{RESULTS}/logs/embed_texts/{{backbone}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/embed_texts/{{backbone}}.tsv"
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=1,
    params:
        spec=backbone_spec,
        demo_dir=demo_dir_param,
        batch_size=config["embed"]["batch_size"],
        device=config["embed"]["device"],
        precision=config["embed"]["precision"],
    script:
        "../scripts/embed_texts.py"


# Zero-shot classification's prompts, in a job of their own: a changed prompt reruns this job and the
# evaluations (which project the prompts through each variant's text head), never the report embeddings,
# heads and indexes downstream of embed_texts. A few dozen sentences: CPU, whatever the backbone.
rule embed_prompts:
    input:
        backbone=demo_dir_input,
    output:
        prompts=f"{RESULTS}/embeddings/{{backbone}}/prompts.parquet",
    log:
        f"{RESULTS}/logs/embed_prompts/{{backbone}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/embed_prompts/{{backbone}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=15,
    params:
        spec=backbone_spec,
        demo_dir=demo_dir_param,
        prompts=ZEROSHOT_PROMPTS,
    script:
        "../scripts/embed_prompts.py"


rule train_head:
    input:
        images=image_embeddings,
        texts=f"{RESULTS}/embeddings/{{backbone}}/texts.parquet",
        image_table=f"{RESULTS}/data/images.parquet",
        studies=f"{RESULTS}/data/studies.parquet",
        labels=f"{RESULTS}/labels/labels.parquet",
    output:
        weights=f"{RESULTS}/models/{{backbone}}/{{variant}}/seed{{seed}}/head.safetensors",
        config=f"{RESULTS}/models/{{backbone}}/{{variant}}/seed{{seed}}/head.json",
        history=f"{RESULTS}/models/{{backbone}}/{{variant}}/seed{{seed}}/history.parquet",
    log:
        f"{RESULTS}/logs/train_head/{{backbone}}/{{variant}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_head/{{backbone}}/{{variant}}/seed{{seed}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=1,
    params:
        variant=variant_config,
        train=train_settings,
        frontal_only=config["images"]["frontal_only"],
        seed=lambda wildcards: int(wildcards.seed),
    script:
        "../scripts/train_head.py"


rule project_embeddings:
    input:
        images=image_embeddings,
        texts=f"{RESULTS}/embeddings/{{backbone}}/texts.parquet",
        image_table=f"{RESULTS}/data/images.parquet",
        studies=f"{RESULTS}/data/studies.parquet",
        labels=f"{RESULTS}/labels/labels.parquet",
        weights=f"{RESULTS}/models/{{backbone}}/{{variant}}/seed{{seed}}/head.safetensors",
        config=f"{RESULTS}/models/{{backbone}}/{{variant}}/seed{{seed}}/head.json",
    output:
        folder=directory(f"{RESULTS}/projected/{{backbone}}/{{variant}}/seed{{seed}}"),
    log:
        f"{RESULTS}/logs/project_embeddings/{{backbone}}/{{variant}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/project_embeddings/{{backbone}}/{{variant}}/seed{{seed}}.tsv"
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    script:
        "../scripts/project_embeddings.py"


rule training_figure:
    input:
        histories=trained_histories,
    output:
        figure=report(
            f"{RESULTS}/figures/training_{{backbone}}.png", caption="../report/training.rst", category="Training"
        ),
    log:
        f"{RESULTS}/logs/training_figure/{{backbone}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/training_figure/{{backbone}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        histories=trained_history_map,
    script:
        "../scripts/training_figure.py"


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
    # next run of the workflow resumes from the last checkpoint (docs/methods.md, Fine-tuning the backbone).
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
