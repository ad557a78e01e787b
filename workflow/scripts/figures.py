from mtcxr.logs import log_to_file

log_to_file(snakemake.log[0])

from mtcxr.summary.figures import FigureOutputs, make_figures  # noqa: E402

make_figures(
    index_dirs=snakemake.params.index_dirs,
    labels_path=snakemake.input.labels,
    summary_path=snakemake.input.summary,
    outputs=FigureOutputs(
        tsne=list(snakemake.output.tsne),
        recall=snakemake.output.recall,
        findings=list(snakemake.output.findings),
        zeroshot=snakemake.output.zeroshot,
    ),
    findings_path=snakemake.input.findings,
    zeroshot_path=snakemake.input.zeroshot,
    perplexity=snakemake.params.perplexity,
    seed=snakemake.params.seed,
)
