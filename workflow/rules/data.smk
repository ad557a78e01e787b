# Data: the dataset read into the core tables (mtcxr.data.ingest) and the pixel cache (mtcxr.data.preprocess).


rule ingest:
    input:
        ingest_inputs,
    output:
        studies=f"{RESULTS}/data/studies.parquet",
        images=f"{RESULTS}/data/images.parquet",
        rejects=f"{RESULTS}/data/rejects.parquet",
        dataset_labels=f"{RESULTS}/data/dataset_labels.parquet",
    log:
        f"{RESULTS}/logs/ingest.log",
    benchmark:
        f"{RESULTS}/benchmarks/ingest.tsv"
    conda:
        ENV
    threads: 1
    # benchmarks/scale.md: a synthetic study of MIMIC's size projects to 31 min (it draws every image);
    # reading MIMIC-CXR-JPG's own files takes 12 s (benchmarks/README.md).
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        dataset=config["dataset"],
        text_section=config["text"]["section"],
        seed=config["seed"],
        work_dir=f"{RESULTS}/data/synthetic_images",
        on_bad_item=config["on_bad_item"],
    script:
        "../scripts/ingest.py"


rule preprocess_images:
    input:
        images=f"{RESULTS}/data/images.parquet",
    output:
        pixels=f"{RESULTS}/data/pixels/shard-{{shard}}.parquet",
        rejects=f"{RESULTS}/data/pixels/rejects-{{shard}}.parquet",
    log:
        f"{RESULTS}/logs/preprocess_images/shard-{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/preprocess_images/shard-{{shard}}.tsv"
    conda:
        ENV
    threads: 4
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        shards=config["images"]["shards"],
        cache_size=config["images"]["cache_size"],
        max_pixels=config["images"]["max_pixels"],
        max_aspect_ratio=config["images"]["max_aspect_ratio"],
        on_bad_item=config["on_bad_item"],
    script:
        "../scripts/preprocess_images.py"
