from mtcxr.logs import log_to_file

log_to_file(snakemake.log[0])

from mtcxr.models.embed import embed_prompt_table  # noqa: E402

embed_prompt_table(
    prompts=snakemake.params.prompts,
    output=snakemake.output.prompts,
    backbone_name=snakemake.wildcards.backbone,
    spec=snakemake.params.spec,
    demo_dir=snakemake.params.demo_dir,
)
