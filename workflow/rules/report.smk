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
