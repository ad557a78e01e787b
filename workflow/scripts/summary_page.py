from mtcxr.logs import log_to_file

log_to_file(snakemake.log[0])

from mtcxr.summary.page import summary_html  # noqa: E402

summary_html(markdown_path=snakemake.input.markdown, output=snakemake.output.page)
