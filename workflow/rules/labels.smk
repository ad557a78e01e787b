rule extract_labels:
    input:
        studies=f"{RESULTS}/data/studies.parquet",
        dataset_labels=f"{RESULTS}/data/dataset_labels.parquet",
    output:
        labels=f"{RESULTS}/labels/labels.parquet",
        agreement=f"{RESULTS}/labels/agreement.parquet",
    params:
        source=config["labels"]["source"],
    log:
        f"{RESULTS}/logs/extract_labels.log",
    benchmark:
        f"{RESULTS}/benchmarks/extract_labels.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        ENV
    script:
        "../scripts/extract_labels.py"
