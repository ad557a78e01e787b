# Summary: the cross-run tables (mtcxr.summary.summarize), the figures (mtcxr.summary.figures) and the
# front page of `snakemake --report`.


rule summarize:
    input:
        unpack(generation_summary_inputs),
        metrics=metric_tables,
        queries=run_paths(f"{RESULTS}/metrics/{{backbone}}/{{variant}}/seed{{seed}}.queries.parquet"),
        findings=run_paths(f"{RESULTS}/metrics/{{backbone}}/{{variant}}/seed{{seed}}.findings.parquet"),
        zeroshot=run_paths(f"{RESULTS}/metrics/{{backbone}}/{{variant}}/seed{{seed}}.zeroshot_auc.parquet"),
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
        zeroshot=report(
            f"{RESULTS}/metrics/zeroshot_auc.csv", caption="../report/zeroshot_table.rst", category="Metrics"
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
        zeroshot=f"{RESULTS}/metrics/zeroshot_auc.csv",
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
        # Drawn here, not in a job of its own: a job costs seconds of imports, this figure milliseconds.
        zeroshot=report(
            f"{RESULTS}/figures/zeroshot_auc.png",
            caption="../report/zeroshot_auc.rst",
            category="Zero-shot classification",
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


# The front page of `snakemake --report` (workflow/report/workflow.rst): the figures only the report
# shows (clinical precision, retrieval examples, rejects) and summary.md as a page (mtcxr.summary.figures, mtcxr.summary.page).


rule clinical_precision_figure:
    input:
        summary=f"{RESULTS}/metrics/summary.parquet",
    output:
        figure=report(
            f"{RESULTS}/figures/clinical_precision_{{backbone}}.png",
            caption="../report/clinical_precision.rst",
            category="Retrieval",
            subcategory="{backbone}",
        ),
    log:
        f"{RESULTS}/logs/clinical_precision_figure/{{backbone}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/clinical_precision_figure/{{backbone}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        k=config["evaluate"]["precision_k"],
    script:
        "../scripts/clinical_precision_figure.py"


rule retrieval_examples_figure:
    input:
        indexes=example_index_folders,
        pixels=expand(f"{RESULTS}/data/pixels/shard-{{shard}}.parquet", shard=SHARDS),
        labels=f"{RESULTS}/labels/labels.parquet",
    output:
        figure=report(
            f"{RESULTS}/figures/retrieval_examples_{{backbone}}.png",
            caption="../report/retrieval_examples.rst",
            category="Retrieval",
            subcategory="{backbone}",
        ),
    log:
        f"{RESULTS}/logs/retrieval_examples_figure/{{backbone}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/retrieval_examples_figure/{{backbone}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        index_dirs=example_index_dirs,
        queries=config["figures"]["example_queries"],
        seed=config["seed"],
    script:
        "../scripts/retrieval_examples_figure.py"


rule rejects_figure:
    input:
        rejects=all_reject_tables,
    output:
        figure=report(f"{RESULTS}/figures/rejects.png", caption="../report/rejects.rst", category="Data"),
    log:
        f"{RESULTS}/logs/rejects_figure.log",
    benchmark:
        f"{RESULTS}/benchmarks/rejects_figure.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/rejects_figure.py"


rule summary_page:
    input:
        markdown=f"{RESULTS}/metrics/summary.md",
    output:
        page=report(f"{RESULTS}/metrics/summary.html", caption="../report/summary_page.rst", category="Metrics"),
    log:
        f"{RESULTS}/logs/summary_page.log",
    benchmark:
        f"{RESULTS}/benchmarks/summary_page.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/summary_page.py"
