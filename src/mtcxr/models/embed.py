"""Stages `embed_images` (one job per pixel shard) and `embed_texts`: backbone forward passes, once.

Heads train from these cached vectors, so the expensive pass over the images runs once per
(backbone, image). Images stream from the shard in batches decoded by DataLoader workers: memory
does not grow with the shard. `embed_prompt_table` embeds zero-shot classification's prompts
(`evaluate.zeroshot_classification`), a job of its own so that a changed prompt reruns nothing upstream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from mtcxr import metrics
from mtcxr.data.imaging import decode_png
from mtcxr.embedding_io import EmbeddingWriter, write_embeddings
from mtcxr.models.backbone import Backbone, load_backbone, resolve_precision
from mtcxr.tables import read_table

log = logging.getLogger(__name__)


def _metadata(backbone: Backbone, name: str, modality: str) -> dict:
    return {
        "backbone": name,
        "spec": backbone.spec,
        "normalized": True,
        "modality": modality,
        "logit_scale": backbone.logit_scale,
        "precision": resolve_precision(backbone.device, backbone.precision),
    }


class Spread:
    """Running sums of embedded vectors: their mean pairwise cosine, to warn when a backbone collapses."""

    def __init__(self) -> None:
        self.total, self.squared, self.n = 0.0, 0.0, 0

    def add(self, vectors: np.ndarray) -> np.ndarray:
        vectors64 = vectors.astype(np.float64)
        self.total = self.total + vectors64.sum(axis=0)
        self.squared += float((vectors64**2).sum())
        self.n += len(vectors)
        return vectors

    def warn_if_collapsed(self, what: str, backbone_name: str) -> float:
        """Log a warning naming the backbone when the vectors sit on (nearly) one point; return the cosine."""
        cosine = metrics.cosine_from_sums(self.total, self.squared, self.n)
        if metrics.is_collapsed(cosine):
            log.warning(
                "the %s embeddings of %s have collapsed: mean pairwise cosine %.4f over %d (>= %.2f), so every "
                "query retrieves the same items. Check the backbone's preprocessing (image size, mean/std, "
                "grayscale to RGB) or, for the demo backbone, train it longer (demo_backbone.epochs).",
                what,
                backbone_name,
                cosine,
                self.n,
                metrics.COLLAPSED_MEAN_COSINE,
            )
        return cosine


class ShardImages(torch.utils.data.IterableDataset):
    """Preprocessed (image ids, pixels) batches of one pixel shard, in the shard's order.

    A batch never spans row groups, so the batch list follows from the file's metadata alone: worker w
    of W builds batches w, w+W, … and the DataLoader, which takes one batch from each worker in turn,
    hands them back in the shard's order. A worker holds at most one row group's PNG bytes (the
    writer bounds row groups), so memory stays flat in the shard size.
    """

    def __init__(self, pixels_path: str | Path, preprocess: Callable, batch_size: int):
        self.pixels_path = str(pixels_path)
        self.preprocess = preprocess
        self.batch_size = batch_size

    def batches(self) -> list[tuple[int, int]]:
        """(row group, first row in it) of every batch, in the shard's order."""
        metadata = pq.ParquetFile(self.pixels_path).metadata
        return [
            (group, start)
            for group in range(metadata.num_row_groups)
            for start in range(0, metadata.row_group(group).num_rows, self.batch_size)
        ]

    def __iter__(self) -> Iterator[tuple[list[str], torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        source = pq.ParquetFile(self.pixels_path)
        loaded, table = None, None
        for group, start in self.batches()[worker::workers]:
            if group != loaded:
                loaded, table = group, source.read_row_group(group, columns=["image_id", "png"])
            chunk = table.slice(start, self.batch_size)
            pixels = torch.stack([self.preprocess(decode_png(data)) for data in chunk.column("png").to_pylist()])
            yield chunk.column("image_id").to_pylist(), pixels


def embed_image_shard(
    pixels_path: str | Path,
    output: str | Path,
    backbone_name: str,
    spec: str,
    demo_dir: str | Path | None = None,
    batch_size: int = 256,
    device: str = "auto",
    threads: int = 1,
    workers: int | None = None,
    precision: str = "auto",
) -> int:
    """Embed every cached image of one shard at `precision` (backbone.PRECISIONS); return the number embedded.

    `workers` loader processes decode and preprocess while the model runs; by default the rule's
    threads less the one that runs the model.
    """
    torch.set_num_threads(max(1, threads))
    backbone = load_backbone(spec, device=device, demo_dir=demo_dir, precision=precision)
    workers = max(0, threads - 1) if workers is None else workers
    total = pq.ParquetFile(pixels_path).metadata.num_rows
    loader = torch.utils.data.DataLoader(
        ShardImages(pixels_path, backbone.preprocess, batch_size),
        batch_size=None,
        num_workers=workers,
        pin_memory=backbone.device.type == "cuda",  # page-locked batches copy to the GPU asynchronously
    )
    metadata = _metadata(backbone, backbone_name, "image")
    spread = Spread()
    with (
        EmbeddingWriter(output, "image_id", backbone.embed_dim, metadata) as writer,
        tqdm(total=total, desc=f"embed images {Path(pixels_path).stem}", unit="img") as progress,
    ):
        for ids, pixels in loader:
            writer.write(ids, spread.add(backbone.encode_images(pixels)))
            progress.update(len(ids))
    spread.warn_if_collapsed("image", backbone_name)
    log.info("embedded %d images with %s (%s) into %s, %d loader workers", total, backbone_name, spec, output, workers)
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


def prompt_rows(prompts: Mapping[str, Mapping[str, Sequence[str]]]) -> dict[str, list[str]]:
    """The prompts as columns: `prompt_id` (`{observation}/{side}/{i}`), `observation`, `side`, `text`."""
    columns: dict[str, list[str]] = {"prompt_id": [], "observation": [], "side": [], "text": []}
    for observation, sides in prompts.items():
        for side, texts in sides.items():
            for i, text in enumerate(texts):
                for column, value in zip(columns, (f"{observation}/{side}/{i}", observation, side, text)):
                    columns[column].append(value)
    return columns


def embed_prompt_table(
    prompts: Mapping[str, Mapping[str, Sequence[str]]],
    output: str | Path,
    backbone_name: str,
    spec: str,
    demo_dir: str | Path | None = None,
) -> int:
    """Embed zero-shot classification's prompts ({observation: {positive: [...], negative: [...]}}, as
    `mtcxr.config.zeroshot_prompts` resolves them) with the backbone's text tower, on the CPU (a few dozen
    sentences), into `output`; return how many."""
    torch.set_num_threads(1)
    backbone = load_backbone(spec, device="cpu", demo_dir=demo_dir)
    columns = prompt_rows(prompts)
    texts = columns["text"]
    vectors = backbone.encode_texts(texts) if texts else np.zeros((0, backbone.embed_dim), dtype=np.float32)
    truncated = count_truncated(backbone, texts)
    if truncated:
        log.warning(
            "%d zero-shot prompts are longer than the context length of %s and are truncated", truncated, backbone_name
        )
    write_embeddings(
        output,
        "prompt_id",
        columns["prompt_id"],
        vectors,
        _metadata(backbone, backbone_name, "text"),
        {name: columns[name] for name in ("observation", "side", "text")},
    )
    log.info("embedded %d zero-shot prompts of %d observations with %s", len(texts), len(prompts), backbone_name)
    return len(texts)


def embed_texts(
    studies_path: str | Path,
    output: str | Path,
    backbone_name: str,
    spec: str,
    demo_dir: str | Path | None = None,
    batch_size: int = 256,
    device: str = "auto",
    threads: int = 1,
    precision: str = "auto",
) -> int:
    """Embed every study's `report` at `precision` (backbone.PRECISIONS); return the number embedded."""
    torch.set_num_threads(max(1, threads))
    backbone = load_backbone(spec, device=device, demo_dir=demo_dir, precision=precision)
    studies = read_table(studies_path, "studies").select("study_id", "report")
    truncated = count_truncated(backbone, studies["report"].to_list())
    if truncated:
        log.warning(
            "%d of %d reports are longer than the context length (%d tokens) of %s and are truncated",
            truncated,
            studies.height,
            backbone.context_length,
            backbone_name,
        )
    spread = Spread()
    with EmbeddingWriter(output, "study_id", backbone.embed_dim, _metadata(backbone, backbone_name, "text")) as writer:
        for start in tqdm(range(0, studies.height, batch_size), desc="embed texts", unit="batch"):
            chunk = studies.slice(start, batch_size)
            writer.write(chunk["study_id"].to_list(), spread.add(backbone.encode_texts(chunk["report"].to_list())))
    spread.warn_if_collapsed("report", backbone_name)
    log.info("embedded %d reports with %s (%s); %d truncated", studies.height, backbone_name, spec, truncated)
    return studies.height
