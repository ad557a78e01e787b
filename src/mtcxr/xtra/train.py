"""Stage `train_xtra`: train X-TRA's retrieval-augmented classifier and its no-retrieval baseline.

Both are trained the same way on the train split's neighbours table: BCE over the 14
observations (uncertain labels by `xtra.uncertain`), AdamW, seeded batch order, and the epoch
with the lowest validation loss kept (its number in the JSON config and marked in
`history.parquet`).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import nn
from tqdm import tqdm

from mtcxr.embedding_io import read_embeddings
from mtcxr.errors import InputError
from mtcxr.models.backbone import choose_device
from mtcxr.tables import CHEXPERT_DISPLAY, CHEXPERT_LABELS, read_table
from mtcxr.xtra.memory import read_memory
from mtcxr.xtra.model import (
    NeighbourTokens,
    RetrievalAugmentedClassifier,
    label_states,
    save_classifier,
    targets_and_mask,
)
from mtcxr.xtra.neighbours import Neighbours, read_neighbours

log = logging.getLogger(__name__)

METHODS = {"xtra": True, "query_only": False}  # method -> whether it attends over the neighbours


@dataclass
class Examples:
    """Queries, their neighbours' memory rows, and their BCE targets and mask (uncertain policy applied)."""

    queries: np.ndarray  # (N, D) float32
    image_rows: np.ndarray  # (N, k) int64
    report_rows: np.ndarray  # (N, k) int64
    targets: np.ndarray  # (N, 14) float32
    mask: np.ndarray  # (N, 14) float32

    def __len__(self) -> int:
        return len(self.queries)


def load_memory_tokens(memory_dir: str | Path, device: torch.device) -> NeighbourTokens:
    """The memory's embeddings and label states, ready to gather neighbour tokens from."""
    folder = Path(memory_dir)
    _, images, _ = read_embeddings(folder / "images.parquet", "image_id")
    image_studies = pl.read_parquet(folder / "images.parquet", columns=["study_id"])
    _, reports, _ = read_embeddings(folder / "reports.parquet", "study_id")
    report_studies = pl.read_parquet(folder / "reports.parquet", columns=["study_id"])
    labels = read_table(folder / "labels.parquet", "labels")
    image_states = label_states(image_studies.join(labels, on="study_id", how="left", maintain_order="left"))
    report_states = label_states(report_studies.join(labels, on="study_id", how="left", maintain_order="left"))
    return NeighbourTokens(images, reports, image_states, report_states, device)


def examples(neighbours: Neighbours, labels_path: str | Path, uncertain: str) -> Examples:
    """Join a split's neighbours with its studies' labels into training (or scoring) examples."""
    labels = read_table(labels_path, "labels")
    joined = pl.DataFrame({"study_id": neighbours.study_ids}).join(
        labels, on="study_id", how="left", maintain_order="left"
    )
    targets, mask = targets_and_mask(label_states(joined), uncertain)
    return Examples(neighbours.queries, neighbours.image_rows, neighbours.report_rows, targets, mask)


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean BCE over the labels the mask keeps (uncertain ones are masked out under U-Ignore)."""
    losses = nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (losses * mask).sum() / mask.sum().clamp(min=1.0)


def _batch(
    data: Examples, rows: torch.Tensor, tokens: NeighbourTokens, device: torch.device
) -> tuple[torch.Tensor, ...]:
    picked = rows.cpu().numpy()
    query = torch.from_numpy(data.queries[picked]).to(device)
    image_rows = torch.from_numpy(data.image_rows[picked]).to(device)
    report_rows = torch.from_numpy(data.report_rows[picked]).to(device)
    return (
        query,
        *tokens(image_rows, report_rows),
        torch.from_numpy(data.targets[picked]).to(device),
        torch.from_numpy(data.mask[picked]).to(device),
    )


@torch.no_grad()
def predict(
    model: RetrievalAugmentedClassifier,
    data: Examples,
    tokens: NeighbourTokens,
    batch_size: int = 1024,
    device: torch.device | None = None,
) -> np.ndarray:
    """Return (N, 14) probabilities of the model for every example."""
    device = device or torch.device("cpu")
    model.eval().to(device)
    out = np.empty((len(data), data.targets.shape[1]), dtype=np.float32)
    for start in range(0, len(data), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(data)))
        query, keys, kinds, states, _, _ = _batch(data, rows, tokens, device)
        out[start : start + len(rows)] = torch.sigmoid(model(query, keys, kinds, states)).cpu().numpy()
    return out


def _loss(
    model: RetrievalAugmentedClassifier, data: Examples, tokens: NeighbourTokens, device: torch.device, batch_size: int
) -> float:
    model.eval()
    total, weight = 0.0, 0.0
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            rows = torch.arange(start, min(start + batch_size, len(data)))
            query, keys, kinds, states, targets, mask = _batch(data, rows, tokens, device)
            logits = model(query, keys, kinds, states)
            total += float(masked_bce(logits, targets, mask)) * float(mask.sum())
            weight += float(mask.sum())
    return total / max(weight, 1.0)


def fit_classifier(
    model: RetrievalAugmentedClassifier,
    train: Examples,
    validate: Examples | None,
    tokens: NeighbourTokens,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    weight_decay: float,
    seed: int,
    device: torch.device,
    desc: str = "train_xtra",
) -> tuple[RetrievalAugmentedClassifier, pl.DataFrame, int]:
    """Train with masked BCE; return (the model at its best validation epoch, per-epoch history, that epoch)."""
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    history, best, best_epoch, best_state = [], float("inf"), 0, None
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # dropout draws from here: seeded, global state untouched
        for epoch in tqdm(range(1, epochs + 1), desc=desc, unit="epoch"):
            model.train()
            order = torch.randperm(len(train), generator=generator)
            running, seen = 0.0, 0
            for start in range(0, len(train), batch_size):
                query, keys, kinds, states, targets, mask = _batch(
                    train, order[start : start + batch_size], tokens, device
                )
                loss = masked_bce(model(query, keys, kinds, states), targets, mask)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                running += float(loss.detach()) * len(query)
                seen += len(query)
            validation = (
                _loss(model, validate, tokens, device, batch_size) if validate is not None and len(validate) else None
            )
            history.append({"epoch": epoch, "train_loss": running / max(seen, 1), "validate_loss": validation})
            # Without a validation split the last epoch is kept.
            score = validation if validation is not None else -epoch
            if score < best:
                best, best_epoch, best_state = score, epoch, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    table = pl.DataFrame(history, schema={"epoch": pl.Int64, "train_loss": pl.Float64, "validate_loss": pl.Float64})
    return model.eval(), table.with_columns(chosen=pl.col("epoch") == best_epoch), best_epoch


def train_xtra(
    memory_dir: str,
    train_neighbours: str,
    validate_neighbours: str,
    labels_path: str,
    output_dir: str,
    xtra_cfg: dict,
    seed: int,
    threads: int = 1,
) -> None:
    """Train the X-TRA classifier and its query-only baseline; write their weights, configs and one history."""
    torch.set_num_threads(max(1, threads))
    device = choose_device(xtra_cfg["device"])
    memory = read_memory(memory_dir)
    train = examples(read_neighbours(train_neighbours, memory_dir), labels_path, xtra_cfg["uncertain"])
    validate = examples(read_neighbours(validate_neighbours, memory_dir), labels_path, xtra_cfg["uncertain"])
    if len(train) < 2:
        raise InputError(f"{train_neighbours} holds {len(train)} train image(s); X-TRA needs at least 2 to train.")
    never = [CHEXPERT_DISPLAY[name] for name, n in zip(CHEXPERT_LABELS, train.targets.sum(axis=0)) if n == 0]
    if never:
        log.warning("no train image is positive for %s: their logits learn only negatives", ", ".join(never))
    tokens = load_memory_tokens(memory_dir, device)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    histories = []
    for method, retrieval in METHODS.items():
        started = time.perf_counter()
        model = RetrievalAugmentedClassifier(
            train.queries.shape[1],
            xtra_cfg["hidden_dim"],
            xtra_cfg["attention_heads"],
            xtra_cfg["dropout"],
            xtra_cfg["label_tokens"],
            retrieval,
            seed=seed,
        )
        model, history, epoch = fit_classifier(
            model,
            train,
            validate,
            tokens,
            epochs=xtra_cfg["epochs"],
            batch_size=xtra_cfg["batch_size"],
            learning_rate=xtra_cfg["learning_rate"],
            weight_decay=xtra_cfg["weight_decay"],
            seed=seed,
            device=device,
            desc=f"train {method}",
        )
        extra = {
            "method": method,
            "best_epoch": epoch,
            "epochs": xtra_cfg["epochs"],
            "k": int(train.image_rows.shape[1]),
            "uncertain": xtra_cfg["uncertain"],
            "backbone": memory.get("backbone"),
            "variant": memory.get("variant"),
            "train_images": len(train),
            "seconds": round(time.perf_counter() - started, 2),
        }
        save_classifier(model.cpu(), out / f"{method}.safetensors", out / f"{method}.json", extra)
        histories.append(history.with_columns(method=pl.lit(method)))
        log.info("%s: best validation loss at epoch %d of %d", method, epoch, xtra_cfg["epochs"])
    pl.concat(histories).select("method", pl.exclude("method")).write_parquet(out / "history.parquet")
