# X-TRA: a memory of the train split, every image's neighbours in it, the retrieval-augmented
# classifier and its baselines (mtcxr.xtra.memory, mtcxr.xtra.neighbours, mtcxr.xtra.train, mtcxr.xtra.evaluate).


rule build_memory:
    input:
        projected=primary_projected,
        labels=f"{RESULTS}/labels/labels.parquet",
    output:
        folder=directory(f"{RESULTS}/xtra/{{backbone}}/{{variant}}/memory"),
    log:
        f"{RESULTS}/logs/build_memory/{{backbone}}/{{variant}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/build_memory/{{backbone}}/{{variant}}.tsv"
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=16000,
        runtime=120,
    params:
        index=config["index"],
        k=config["xtra"]["k"],
        frontal_only=config["images"]["frontal_only"],
        seed=config["seed"],
    script:
        "../scripts/build_memory.py"


rule retrieve_neighbours:
    input:
        memory=f"{RESULTS}/xtra/{{backbone}}/{{variant}}/memory",
        projected=primary_projected,
    output:
        neighbours=f"{RESULTS}/xtra/{{backbone}}/{{variant}}/neighbours/{{split}}.parquet",
    log:
        f"{RESULTS}/logs/retrieve_neighbours/{{backbone}}/{{variant}}/{{split}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/retrieve_neighbours/{{backbone}}/{{variant}}/{{split}}.tsv"
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=16000,
        runtime=120,
    params:
        k=config["xtra"]["k"],
        index=config["index"],
        frontal_only=config["images"]["frontal_only"],
    script:
        "../scripts/retrieve_neighbours.py"


rule train_xtra:
    input:
        memory=f"{RESULTS}/xtra/{{backbone}}/{{variant}}/memory",
        train=f"{RESULTS}/xtra/{{backbone}}/{{variant}}/neighbours/train.parquet",
        validate=f"{RESULTS}/xtra/{{backbone}}/{{variant}}/neighbours/validate.parquet",
        labels=f"{RESULTS}/labels/labels.parquet",
    output:
        xtra=f"{RESULTS}/xtra/{{backbone}}/{{variant}}/model/xtra.safetensors",
        xtra_config=f"{RESULTS}/xtra/{{backbone}}/{{variant}}/model/xtra.json",
        query_only=f"{RESULTS}/xtra/{{backbone}}/{{variant}}/model/query_only.safetensors",
        query_only_config=f"{RESULTS}/xtra/{{backbone}}/{{variant}}/model/query_only.json",
        history=f"{RESULTS}/xtra/{{backbone}}/{{variant}}/model/history.parquet",
    log:
        f"{RESULTS}/logs/train_xtra/{{backbone}}/{{variant}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_xtra/{{backbone}}/{{variant}}.tsv"
    conda:
        ENV
    threads: 2
    # benchmarks/scale.md: MIMIC's size projects to about 4 h on two CPU cores (grows with the train
    # queries, b = 1.02); the runtime is twice that. On a GPU node the Slurm profile's runtime applies.
    resources:
        mem_mb=16000,
        runtime=600,
        gpu=1,
    params:
        output_dir=xtra_model_dir,
        xtra=xtra_settings(),
        seed=config["seed"],
    script:
        "../scripts/train_xtra.py"


rule evaluate_xtra:
    input:
        memory=f"{RESULTS}/xtra/{{backbone}}/{{variant}}/memory",
        test=f"{RESULTS}/xtra/{{backbone}}/{{variant}}/neighbours/test.parquet",
        labels=f"{RESULTS}/labels/labels.parquet",
        models=xtra_model_files,
    output:
        auc=f"{RESULTS}/metrics/xtra/{{backbone}}/{{variant}}.parquet",
        paired=f"{RESULTS}/metrics/xtra/{{backbone}}/{{variant}}.paired.parquet",
        scores=f"{RESULTS}/metrics/xtra/{{backbone}}/{{variant}}.scores.parquet",
    log:
        f"{RESULTS}/logs/evaluate_xtra/{{backbone}}/{{variant}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate_xtra/{{backbone}}/{{variant}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        model_dir=xtra_model_dir,
        uncertain=config["xtra"]["uncertain"],
        bootstrap=config["evaluate"]["bootstrap"],
        seed=config["evaluate"]["seed"],
    script:
        "../scripts/evaluate_xtra.py"


rule xtra_figure:
    input:
        auc=xtra_tables("parquet"),
    output:
        figure=report(f"{RESULTS}/figures/xtra_auc.png", caption="../report/xtra_auc.rst", category="X-TRA"),
    log:
        f"{RESULTS}/logs/xtra_figure.log",
    benchmark:
        f"{RESULTS}/benchmarks/xtra_figure.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/xtra_figure.py"
