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
    script:
        "../scripts/embed_texts.py"
