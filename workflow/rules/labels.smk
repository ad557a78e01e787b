rule extract_labels:
    input:
        studies=f"{RESULTS}/data/studies.parquet",
        dataset_labels=f"{RESULTS}/data/dataset_labels.parquet",
    output:
        labels=f"{RESULTS}/labels/labels.parquet",
        agreement=f"{RESULTS}/labels/agreement.parquet",
    log:
        f"{RESULTS}/logs/extract_labels.log",
    benchmark:
        f"{RESULTS}/benchmarks/extract_labels.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        source=config["labels"]["source"],
    script:
        "../scripts/extract_labels.py"
