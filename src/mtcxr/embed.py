"""Stages `embed_images` (one job per pixel shard) and `embed_texts`: backbone forward passes, once.

Heads train from these cached vectors, so the expensive pass over the images runs once per
(backbone, image). Images stream from the shard in record batches: memory does not grow with it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from mtcxr.backbone import Backbone, load_backbone
from mtcxr.embeddings import EmbeddingWriter
from mtcxr.imaging import decode_png
from mtcxr.tables import read_table

log = logging.getLogger(__name__)


def _metadata(backbone: Backbone, name: str, modality: str) -> dict:
    return {"backbone": name, "spec": backbone.spec, "normalized": True, "modality": modality,
            "logit_scale": backbone.logit_scale}


def embed_image_shard(
    pixels_path: str | Path,
    output: str | Path,
    backbone_name: str,
    spec: str,
    demo_dir: str | Path | None = None,
    batch_size: int = 128,
    device: str = "auto",
    threads: int = 1,
) -> int:
    """Embed every cached image of one shard; return the number embedded."""
    torch.set_num_threads(max(1, threads))
    backbone = load_backbone(spec, device=device, demo_dir=demo_dir)
    source = pq.ParquetFile(pixels_path)
    total = source.metadata.num_rows
    with EmbeddingWriter(output, "image_id", backbone.embed_dim, _metadata(backbone, backbone_name, "image")) as writer:
        with tqdm(total=total, desc=f"embed images {Path(pixels_path).stem}", unit="img") as progress:
            for batch in source.iter_batches(batch_size=batch_size, columns=["image_id", "png"]):
                ids = batch.column(0).to_pylist()
                pixels = torch.stack([backbone.preprocess(decode_png(data)) for data in batch.column(1).to_pylist()])
                writer.write(ids, backbone.encode_images(pixels))
                progress.update(len(ids))
    log.info("embedded %d images with %s (%s) into %s", total, backbone_name, spec, output)
    return total


def count_truncated(backbone: Backbone, texts: list[str]) -> int:
    """How many texts have more tokens than the backbone's context length."""
    tokenizer = backbone.tokenizer
    limit = backbone.context_length - 2  # start and end tokens
    if hasattr(tokenizer, "encode"):
        return sum(len(tokenizer.encode(text)) > limit for text in texts)
    inner = getattr(tokenizer, "tokenizer", None)
    if inner is not None:
        return sum(len(ids) > limit for ids in inner(texts, add_special_tokens=False)["input_ids"])
    return 0


def embed_texts(
    studies_path: str | Path,
    output: str | Path,
    backbone_name: str,
    spec: str,
    demo_dir: str | Path | None = None,
    batch_size: int = 256,
    device: str = "auto",
    threads: int = 1,
) -> int:
    """Embed every study's `report`; return the number embedded."""
    torch.set_num_threads(max(1, threads))
    backbone = load_backbone(spec, device=device, demo_dir=demo_dir)
    studies = read_table(studies_path, "studies").select("study_id", "report")
    truncated = count_truncated(backbone, studies["report"].to_list())
    if truncated:
        log.warning(
            "%d of %d reports are longer than the context length (%d tokens) of %s and are truncated",
            truncated, studies.height, backbone.context_length, backbone_name,
        )
    with EmbeddingWriter(output, "study_id", backbone.embed_dim, _metadata(backbone, backbone_name, "text")) as writer:
        for start in tqdm(range(0, studies.height, batch_size), desc="embed texts", unit="batch"):
            chunk = studies.slice(start, batch_size)
            writer.write(chunk["study_id"].to_list(), backbone.encode_texts(chunk["report"].to_list()))
    log.info("embedded %d reports with %s (%s); %d truncated", studies.height, backbone_name, spec, truncated)
    return studies.height


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
