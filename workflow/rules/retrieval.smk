# Retrieval: FAISS indexes of each variant and seed (mtcxr.retrieval.index) and their metrics
# under the published protocols (mtcxr.retrieval.evaluate).


rule build_index:
    input:
        projected=f"{RESULTS}/projected/{{backbone}}/{{variant}}/seed{{seed}}",
        # Not read here, but named by index.json: `mtcxr search` loads them to project a query.
        weights=f"{RESULTS}/models/{{backbone}}/{{variant}}/seed{{seed}}/head.safetensors",
        config=f"{RESULTS}/models/{{backbone}}/{{variant}}/seed{{seed}}/head.json",
    output:
        folder=directory(f"{RESULTS}/index/{{backbone}}/{{variant}}/seed{{seed}}"),
    log:
        f"{RESULTS}/logs/build_index/{{backbone}}/{{variant}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/build_index/{{backbone}}/{{variant}}/seed{{seed}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        demo_dir=demo_dir_param,
        frontal_only=config["images"]["frontal_only"],
    script:
        "../scripts/build_index.py"


rule evaluate_variant:
    input:
        index=f"{RESULTS}/index/{{backbone}}/{{variant}}/seed{{seed}}",
        labels=f"{RESULTS}/labels/labels.parquet",
        # Zero-shot classification: the backbone's prompts, projected here through the variant's text head.
        prompts=f"{RESULTS}/embeddings/{{backbone}}/prompts.parquet",
        heads=f"{RESULTS}/models/{{backbone}}/{{variant}}/seed{{seed}}/head.safetensors",
    output:
        metrics=f"{RESULTS}/metrics/{{backbone}}/{{variant}}/seed{{seed}}.parquet",
        queries=f"{RESULTS}/metrics/{{backbone}}/{{variant}}/seed{{seed}}.queries.parquet",
        findings=f"{RESULTS}/metrics/{{backbone}}/{{variant}}/seed{{seed}}.findings.parquet",
        zeroshot=f"{RESULTS}/metrics/{{backbone}}/{{variant}}/seed{{seed}}.zeroshot_auc.parquet",
    log:
        f"{RESULTS}/logs/evaluate/{{backbone}}/{{variant}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{backbone}}/{{variant}}/seed{{seed}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        ks=config["evaluate"]["ks"],
        precision_k=config["evaluate"]["precision_k"],
        bootstrap=config["evaluate"]["bootstrap"],
        seed=config["evaluate"]["seed"],
        protocols=config["evaluate"]["protocols"],
        cxr_clip_images=CXR_CLIP_IMAGES,
        label_5x200=config["evaluate"]["label_5x200"],
        zeroshot_uncertain=config["evaluate"]["zeroshot_classification"]["uncertain"],
    script:
        "../scripts/evaluate.py"


# `snakemake evaluate`: every variant of every backbone evaluated, not yet summarised.
rule evaluate:
    input:
        metric_tables,
