from mtcxr.logs import log_to_file

log_to_file(snakemake.log[0])

from mtcxr.summary.figures import make_figures  # noqa: E402

make_figures(
    index_dirs=snakemake.params.index_dirs,
    labels_path=snakemake.input.labels,
    summary_path=snakemake.input.summary,
    output_tsne=list(snakemake.output.tsne),
    output_recall=snakemake.output.recall,
    findings_path=snakemake.input.findings,
    output_findings=list(snakemake.output.findings),
    perplexity=snakemake.params.perplexity,
    seed=snakemake.params.seed,
)
