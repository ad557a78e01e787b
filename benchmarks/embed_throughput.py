"""Images/s and texts/s of the embedding stages, through the real stage functions, on this machine.

For each backbone, randomly initialised (throughput does not depend on the weights):

- `demo`: the demo backbone's architecture (ModifiedResNet at 64 px, 2-layer text transformer);
- `ViT-B-16`: open_clip's ViT-B/16 CLIP (224 px, 12-layer text transformer, context 77);
- `biomedclip-base`: BiomedCLIP's exact structure and size (timm ViT-B/16 at 224 px + BERT-base,
  context 256), written by `mtcxr.models.biomedclip_shape.write_biomedclip_like(size="base")`.

Images come from a pixel shard as `preprocess_images` writes it (256 px grayscale PNGs of
synthetic radiographs, row groups of 512) and go through `embed_image_shard` (PNG decode,
the backbone's own preprocessing in DataLoader workers, forward pass, Parquet out); reports through
`embed_texts`. Model loading is timed apart and left out of the rate. `forward` rates are the
encoder alone on a ready batch, which bounds what the stage can reach.

On CUDA (when present) the stages run in bf16 autocast; the GPU peak used for the fraction is
`--peak-tflops` (H200/H100 SXM dense bf16: 989).

Usage: .venv/bin/python benchmarks/embed_throughput.py [--images 128] [--texts 128] [--threads 2]
       [--backbones demo,ViT-B-16,biomedclip-base] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from mtcxr.data.datasets.synthetic import draw_studies, render_frontal, report_sections, to_uint8
from mtcxr.data.imaging import encode_png
from mtcxr.data.preprocess import PIXELS_SCHEMA, WRITE_EVERY
from mtcxr.data.text import section_text
from mtcxr.models.backbone import CLIP_MEAN, CLIP_STD, load_backbone, save_local_dir
from mtcxr.models.biomedclip_shape import write_biomedclip_like
from mtcxr.models.demo import demo_model_cfg
from mtcxr.models.embed import embed_image_shard, embed_texts
from mtcxr.tables import write_table

# Forward FLOPs per item (multiply-add = 2 FLOPs), for the fraction of peak on a GPU.
GFLOP_PER_IMAGE = {"ViT-B-16": 17.6, "biomedclip-base": 17.6}


def write_inputs(folder: Path, n_images: int, n_texts: int) -> tuple[Path, Path]:
    """A pixel shard of `n_images` synthetic radiographs at 256 px and a studies table of `n_texts` reports."""
    studies = draw_studies(max(n_images, n_texts), max(n_images, n_texts), 0, 0.0, prefix="bench-")
    rows = []
    for study in studies[:n_images]:
        png = encode_png(Image.fromarray(to_uint8(render_frontal(study, 256)), mode="L"))
        rows.append(
            {
                "image_id": study.study_id,
                "study_id": study.study_id,
                "split": "test",
                "view": "PA",
                "width": 256,
                "height": 256,
                "png": png,
            }
        )
    pixels = folder / "shard-0.parquet"
    with pq.ParquetWriter(pixels, PIXELS_SCHEMA) as writer:
        for start in range(0, len(rows), WRITE_EVERY):
            writer.write_table(pa.Table.from_pylist(rows[start : start + WRITE_EVERY], schema=PIXELS_SCHEMA))
    table = pl.DataFrame(
        [
            {
                "study_id": s.study_id,
                "patient_id": s.patient_id,
                "split": "test",
                "findings": f,
                "impression": i,
                "report": section_text(f, i, "both"),
                "dataset": "synthetic",
            }
            for s in studies[:n_texts]
            for f, i in [report_sections(s)]
        ]
    )
    write_table(table, "studies", folder / "studies.parquet")
    return pixels, folder / "studies.parquet"


def backbone_spec(name: str, folder: Path) -> str:
    if name == "demo":
        import open_clip

        cfg = demo_model_cfg(128, 64)
        model = open_clip.CLIP(**cfg)
        preprocess = {
            "size": 64,
            "mean": list(CLIP_MEAN),
            "std": list(CLIP_STD),
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        }
        return f"local-dir:{save_local_dir(model, cfg, preprocess, folder / 'demo')}"
    if name == "biomedclip-base":
        return f"local-dir:{write_biomedclip_like(folder / 'biomedclip-base', size='base')}"
    return name  # an open_clip model name without a pretrained tag: random initialisation


def timed(function, *args, **kwargs) -> float:
    start = time.perf_counter()
    function(*args, **kwargs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def forward_rates(spec: str, batch_size: int, device: str) -> tuple[float, float]:
    """Encoder-only images/s and texts/s on a ready batch (after one warm-up batch)."""
    backbone = load_backbone(spec, device=device)
    size = backbone.preprocess.transforms[0].size
    size = size if isinstance(size, int) else size[0]
    pixels = torch.randn(batch_size, 3, size, size)
    texts = ["Heart size is normal. No focal consolidation, pleural effusion or pneumothorax."] * batch_size
    backbone.encode_images(pixels)
    backbone.encode_texts(texts)
    rounds = 3
    images = rounds * batch_size / sum(timed(backbone.encode_images, pixels) for _ in range(rounds))
    texts_rate = rounds * batch_size / sum(timed(backbone.encode_texts, texts) for _ in range(rounds))
    return images, texts_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--texts", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--backbones", default="demo,ViT-B-16,biomedclip-base")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available() and args.device in ("auto", "cuda")
    device_name = (
        torch.cuda.get_device_name()
        if cuda
        else f"{platform.processor() or platform.machine()}, {args.threads} threads"
    )
    print(
        f"# embedding throughput on {device_name}; torch {torch.__version__}, batch {args.batch_size}"
        f"{', bf16 autocast' if cuda else ', float32'}"
    )
    print(
        "| backbone | images/s (embed_image_shard) | images/s (forward) | texts/s (embed_texts) | texts/s (forward) |"
        + (" image forward, % of peak |" if cuda else "")
    )
    print("|---|---:|---:|---:|---:|" + ("---:|" if cuda else ""))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pixels, studies = write_inputs(folder, args.images, args.texts)
        for name in args.backbones.split(","):
            spec = backbone_spec(name, folder)
            load = timed(load_backbone, spec, device=args.device)
            shard = timed(
                embed_image_shard,
                pixels,
                folder / f"{name}-images.parquet",
                name,
                spec,
                batch_size=args.batch_size,
                device=args.device,
                threads=args.threads,
            )
            texts = timed(
                embed_texts,
                studies,
                folder / f"{name}-texts.parquet",
                name,
                spec,
                batch_size=args.batch_size,
                device=args.device,
                threads=args.threads,
            )
            image_forward, text_forward = forward_rates(spec, args.batch_size, args.device)
            row = (
                f"| {name} | {args.images / max(shard - load, 1e-9):,.1f} | {image_forward:,.1f} | "
                f"{args.texts / max(texts - load, 1e-9):,.1f} | {text_forward:,.1f} |"
            )
            if cuda:
                flops = GFLOP_PER_IMAGE.get(name)
                row += f" {100 * image_forward * flops / (args.peak_tflops * 1000):.1f}% |" if flops else " |"
            print(row, flush=True)


if __name__ == "__main__":
    main()
