from mtcxr.logs import log_to_file

log_to_file(snakemake.log[0])

from mtcxr.retrieval.evaluate import EvaluateSettings, evaluate_retrieval  # noqa: E402

params = snakemake.params
evaluate_retrieval(
    index_dir=snakemake.input.index,
    labels_path=snakemake.input.labels,
    output_metrics=snakemake.output.metrics,
    output_queries=snakemake.output.queries,
    output_findings=snakemake.output.findings,
    prompts=snakemake.input.prompts,
    output_zeroshot=snakemake.output.zeroshot,
    # The rule's params carry the config's `evaluate:` keys (cxr_clip_images resolved by dataset).
    settings=EvaluateSettings.from_config(
        {
            "ks": params.ks,
            "precision_k": params.precision_k,
            "bootstrap": params.bootstrap,
            "seed": params.seed,
            "protocols": params.protocols,
            "cxr_clip_images": params.cxr_clip_images,
            "label_5x200": params.label_5x200,
            "zeroshot_classification": {"uncertain": params.zeroshot_uncertain},
        }
    ),
)
