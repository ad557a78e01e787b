# Report generation by retrieval: every test study's report written by retrieving a train report
# (mtcxr.generation.generate), scored with pycocoevalcap's NLG metrics and clinical efficacy (mtcxr.generation.score).


rule generate_baselines:
    input:
        image_table=f"{RESULTS}/data/images.parquet",
        studies=f"{RESULTS}/data/studies.parquet",
        pixel_rejects=pixel_reject_tables,
    output:
        reports=f"{RESULTS}/generation/baselines.parquet",
        rejects=f"{RESULTS}/generation/rejects.parquet",
    log:
        f"{RESULTS}/logs/generate_baselines.log",
    benchmark:
        f"{RESULTS}/benchmarks/generate_baselines.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        reference=config["generation"]["reference"],
        seed=config["seed"],
    script:
        "../scripts/generate_baselines.py"


rule generate_reports:
    input:
        projected=primary_projected,
        image_table=f"{RESULTS}/data/images.parquet",
        studies=f"{RESULTS}/data/studies.parquet",
        pixel_rejects=pixel_reject_tables,
    output:
        reports=f"{RESULTS}/generation/{{backbone}}/{{variant}}/retrieval.parquet",
    log:
        f"{RESULTS}/logs/generate_reports/{{backbone}}/{{variant}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/generate_reports/{{backbone}}/{{variant}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        generation=generation_settings(),
    script:
        "../scripts/generate_reports.py"


rule generate_xtra_reports:
    input:
        memory=f"{RESULTS}/xtra/{{backbone}}/{{variant}}/memory",
        test=f"{RESULTS}/xtra/{{backbone}}/{{variant}}/neighbours/test.parquet",
        models=xtra_model_files,
        image_table=f"{RESULTS}/data/images.parquet",
        studies=f"{RESULTS}/data/studies.parquet",
        pixel_rejects=pixel_reject_tables,
    output:
        reports=f"{RESULTS}/generation/{{backbone}}/{{variant}}/xtra.parquet",
    log:
        f"{RESULTS}/logs/generate_xtra_reports/{{backbone}}/{{variant}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/generate_xtra_reports/{{backbone}}/{{variant}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        model_dir=xtra_model_dir,
        generation=generation_settings(),
    script:
        "../scripts/generate_xtra_reports.py"


rule score_generation:
    input:
        reports=generation_tables,
    output:
        per_study=f"{RESULTS}/metrics/generation_per_study.parquet",
        metrics=f"{RESULTS}/metrics/generation.parquet",
        csv=report(f"{RESULTS}/metrics/generation.csv", caption="../report/generation_table.rst", category="Metrics"),
    log:
        f"{RESULTS}/logs/score_generation.log",
    benchmark:
        f"{RESULTS}/benchmarks/score_generation.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    # generation.java is not a param (the script reads it from the config): which Java runs METEOR
    # does not change the scores, so pointing it elsewhere reruns nothing.
    params:
        uncertain=config["generation"]["uncertain"],
        bootstrap=config["evaluate"]["bootstrap"],
        seed=config["evaluate"]["seed"],
    script:
        "../scripts/score_generation.py"


rule generation_figure:
    input:
        metrics=f"{RESULTS}/metrics/generation.parquet",
    output:
        figure=report(
            f"{RESULTS}/figures/generation.png", caption="../report/generation.rst", category="Report generation"
        ),
    log:
        f"{RESULTS}/logs/generation_figure.log",
    benchmark:
        f"{RESULTS}/benchmarks/generation_figure.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/generation_figure.py"
