rule build_index:
    input:
        images=image_embeddings,
        texts=f"{RESULTS}/embeddings/{{backbone}}/texts.parquet",
        image_table=f"{RESULTS}/data/images.parquet",
        studies=f"{RESULTS}/data/studies.parquet",
        labels=f"{RESULTS}/labels/labels.parquet",
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
    output:
        metrics=f"{RESULTS}/metrics/{{backbone}}/{{variant}}/seed{{seed}}.parquet",
        queries=f"{RESULTS}/metrics/{{backbone}}/{{variant}}/seed{{seed}}.queries.parquet",
        findings=f"{RESULTS}/metrics/{{backbone}}/{{variant}}/seed{{seed}}.findings.parquet",
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
    script:
        "../scripts/evaluate.py"


# `snakemake evaluate`: every variant of every backbone evaluated, not yet summarised.
rule evaluate:
    input:
        metric_tables,


rule summarize:
    input:
        unpack(generation_summary_inputs),
        metrics=metric_tables,
        queries=run_paths(f"{RESULTS}/metrics/{{backbone}}/{{variant}}/seed{{seed}}.queries.parquet"),
        findings=run_paths(f"{RESULTS}/metrics/{{backbone}}/{{variant}}/seed{{seed}}.findings.parquet"),
        xtra_auc=xtra_tables("parquet"),
        xtra_paired=xtra_tables("paired.parquet"),
        rejects=all_reject_tables,
    output:
        parquet=f"{RESULTS}/metrics/summary.parquet",
        csv=report(f"{RESULTS}/metrics/summary.csv", caption="../report/summary.rst", category="Metrics"),
        md=f"{RESULTS}/metrics/summary.md",
        paired=report(f"{RESULTS}/metrics/paired_vs_zeroshot.csv", caption="../report/paired.rst", category="Metrics"),
        xtra=report(f"{RESULTS}/metrics/xtra_auc.csv", caption="../report/xtra_table.rst", category="Metrics"),
        findings=report(
            f"{RESULTS}/metrics/finding_precision.csv", caption="../report/finding_table.rst", category="Metrics"
        ),
    log:
        f"{RESULTS}/logs/summarize.log",
    benchmark:
        f"{RESULTS}/benchmarks/summarize.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        bootstrap=config["evaluate"]["bootstrap"],
        seed=config["evaluate"]["seed"],
        examples=config["generation"]["examples"],
    script:
        "../scripts/summarize.py"


rule figures:
    input:
        summary=f"{RESULTS}/metrics/summary.parquet",
        findings=f"{RESULTS}/metrics/finding_precision.csv",
        labels=f"{RESULTS}/labels/labels.parquet",
        indexes=index_folders,
    output:
        # One job draws every backbone's figures, so they share one report subcategory (shared_subcategory).
        tsne=report(
            expand(f"{RESULTS}/figures/tsne_{{backbone}}.png", backbone=BACKBONES),
            caption="../report/tsne.rst",
            category="Retrieval",
            subcategory=shared_subcategory(),
        ),
        findings=report(
            expand(
                f"{RESULTS}/figures/finding_precision_{{backbone}}.png",
                backbone=BACKBONES,
            ),
            caption="../report/finding_precision.rst",
            category="Retrieval",
            subcategory=shared_subcategory(),
        ),
        recall=report(
            f"{RESULTS}/figures/recall_at_k.png",
            caption="../report/recall.rst",
            category="Retrieval",
            subcategory=shared_subcategory(),
        ),
    log:
        f"{RESULTS}/logs/figures.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        index_dirs=index_dirs,
        perplexity=config["figures"]["tsne_perplexity"],
        seed=config["seed"],
    script:
        "../scripts/figures.py"
