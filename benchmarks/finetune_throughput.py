"""Training images/s of `finetune_backbone`, through the real stage function, on this machine.

For each backbone (randomly initialised; throughput does not depend on the weights) and each
(image_blocks, text_layers) setting, a run of `--steps` steps at `--batch-size` over synthetic 256 px
radiographs as `preprocess_images` caches them: PNG decode, the backbone's preprocessing, forward of
both towers, the multitask losses, backward through the unfrozen blocks, AdamW. The rate is from the
stage's per-step wall time after `--warmup` steps (model loading and the first steps' kernel set-up left
out). The projected MIMIC-CXR epoch is its about 240,000 frontal train images at that rate. On CUDA
the stage runs in bf16 autocast with gradient checkpointing.

Usage: .venv/bin/python benchmarks/finetune_throughput.py [--steps 12] [--batch-size 8] [--threads 2]
       [--backbones demo,biomedclip-base] [--settings 0:0,1:0,1:1,12:12] [--device auto]
       [--precision auto] [--grad-checkpointing auto]
"""

from __future__ import annotations

import argparse
import platform
import resource
import tempfile
from pathlib import Path

import polars as pl
import torch

from mtcxr.models.finetune import FinetuneInputs, FinetuneSettings, finetune_backbone
from mtcxr.tables import CHEXPERT_LABELS, read_table, write_table

from embed_throughput import backbone_spec, write_inputs

MIMIC_TRAIN_FRONTAL = 240_000


def train_tables(folder: Path, pixels: Path, studies: Path) -> tuple[Path, Path, Path]:
    """The benchmark's shard and studies, relabelled as the train split, and labels with two classes."""
    shard = pl.read_parquet(pixels).with_columns(split=pl.lit("train"))
    train_pixels = folder / "train-0.parquet"
    shard.write_parquet(train_pixels)
    table = read_table(studies, "studies").with_columns(split=pl.lit("train"))
    write_table(table, "studies", folder / "train_studies.parquet")
    labels = pl.DataFrame(
        {
            "study_id": table["study_id"],
            **{name: pl.Series([None] * table.height, dtype=pl.Int8) for name in CHEXPERT_LABELS},
            "abnormal": [i % 2 == 0 for i in range(table.height)],
            "source": "dataset",
        }
    )
    write_table(labels, "labels", folder / "labels.parquet")
    return train_pixels, folder / "train_studies.parquet", folder / "labels.parquet"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backbones", default="demo,biomedclip-base")
    parser.add_argument("--settings", default="0:0,1:0,1:1", help="image_blocks:text_layers pairs")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--warmup", type=int, default=4, help="first steps left out of the rate")
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    parser.add_argument("--grad-checkpointing", default="auto", choices=["auto", "true", "false"])
    args = parser.parse_args()
    checkpointing = {"auto": "auto", "true": True, "false": False}[args.grad_checkpointing]
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pixels, studies = write_inputs(folder, args.batch_size * args.steps, args.batch_size * args.steps)
        pixels, studies, labels = train_tables(folder, pixels, studies)
        print(
            f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
            f"cuda {torch.cuda.is_available()}"
        )
        print(
            "| backbone | image_blocks | text_layers | trainable parameters | precision | checkpointing | images/s "
            "| one MIMIC epoch | peak GPU memory |"
        )
        print("|---|---:|---:|---:|---|---|---:|---:|---:|")
        for name in args.backbones.split(","):
            spec = backbone_spec(name, folder)
            for setting in args.settings.split(","):
                blocks, layers = (int(x) for x in setting.split(":"))
                settings = {
                    "image_blocks": blocks,
                    "text_layers": layers,
                    "epochs": 1,
                    "batch_size": args.batch_size,
                    "backbone_lr": 1e-5,
                    "head_lr": 1e-3,
                    "warmup_steps": 1,
                    "weight_decay": 0.05,
                    "grad_clip": 1.0,
                    "checkpoint_minutes": 1e9,
                    "device": args.device,
                    "precision": args.precision,
                    "grad_checkpointing": checkpointing,
                }
                facts = finetune_backbone(
                    spec,
                    FinetuneInputs([str(pixels)], str(studies), str(labels)),
                    str(folder / f"out-{name}"),
                    str(folder / "ckpt.pt"),
                    {"losses": {"clip": 1.0, "supcon": 1.0, "bce": 1.0}},
                    FinetuneSettings.from_config(settings, {"hidden_dim": 512, "supcon_temperature": 0.1}),
                    threads=args.threads,
                )
                history = pl.read_parquet(folder / f"out-{name}" / "history.parquet")
                timed = history["seconds"][args.warmup :]  # the first steps build kernels for new shapes
                rate = args.batch_size * len(timed) / timed.sum()
                hours = MIMIC_TRAIN_FRONTAL / rate / 3600
                gpu = facts["peak_gpu_memory_gib"]
                print(
                    f"| {name} | {blocks} | {layers} | {facts['trainable_parameters']:,} | {facts['precision']} "
                    f"| {'on' if facts['grad_checkpointing'] else 'off'} | {rate:.1f} | {hours:,.1f} h "
                    f"| {'-' if gpu is None else f'{gpu:.2f} GiB'} |"
                )
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS {peak:,.0f} MiB")


if __name__ == "__main__":
    main()
