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
