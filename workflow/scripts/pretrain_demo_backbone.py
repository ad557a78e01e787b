from mtcxr.logs import log_to_file

log_to_file(snakemake.log[0])

import torch  # noqa: E402

from mtcxr.models.demo import pretrain_demo_backbone  # noqa: E402

torch.set_num_threads(snakemake.threads)
pretrain_demo_backbone(output_dir=snakemake.output.folder, seed=snakemake.params.seed, **snakemake.params.options)
