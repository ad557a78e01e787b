"""Stage `train_xtra`: train X-TRA's retrieval-augmented classifier and its no-retrieval baseline.

Both are trained the same way on the train split's neighbours table: BCE over the 14
observations (uncertain labels by `xtra.uncertain`), AdamW, seeded batch order, and the epoch
with the lowest validation loss kept (its number in the JSON config and marked in
`history.parquet`). The `xtra:` settings travel as one `XtraSettings`; what scoring shares with
training (methods, examples, memory tokens, prediction) is in the library module `xtra.model`.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

import polars as pl
import torch
from torch import nn
from tqdm import tqdm

from mtcxr.errors import InputError
from mtcxr.models.backbone import choose_device
from mtcxr.tables import CHEXPERT_DISPLAY, CHEXPERT_LABELS
from mtcxr.xtra.model import (
    METHODS,
    Examples,
    NeighbourTokens,
    RetrievalAugmentedClassifier,
    examples,
    gather_batch,
    load_memory_tokens,
    save_classifier,
)
from mtcxr.xtra.store import read_memory, read_neighbours

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class XtraSettings:
    """The `xtra:` settings of X-TRA's classifiers (not `k` nor the memory: they reach the job as its
    inputs); the defaults are the config schema's."""

    hidden_dim: int = 256
    attention_heads: int = 4
    dropout: float = 0.1
    label_tokens: bool = True
    uncertain: str = "ignore"
    epochs: int = 30
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    device: str = "auto"

    @classmethod
    def from_config(cls, section: Mapping) -> XtraSettings:
        """From the config's `xtra:` section, or the part of it the rule passes; a key it lacks keeps its
        default, and the keys of other X-TRA stages (variants, memory, k) are not settings of these."""
        names = {field.name for field in fields(cls)}
        return cls(**{key: value for key, value in section.items() if key in names})


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean BCE over the labels the mask keeps (uncertain ones are masked out under U-Ignore)."""
    losses = nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (losses * mask).sum() / mask.sum().clamp(min=1.0)


def _loss(
    model: RetrievalAugmentedClassifier, data: Examples, tokens: NeighbourTokens, device: torch.device, batch_size: int
) -> float:
    model.eval()
    total, weight = 0.0, 0.0
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            rows = torch.arange(start, min(start + batch_size, len(data)))
            query, keys, kinds, states, targets, mask = gather_batch(data, rows, tokens, device)
            logits = model(query, keys, kinds, states)
            total += float(masked_bce(logits, targets, mask)) * float(mask.sum())
            weight += float(mask.sum())
    return total / max(weight, 1.0)


def fit_classifier(
    model: RetrievalAugmentedClassifier,
    train: Examples,
    validate: Examples | None,
    tokens: NeighbourTokens,
    settings: XtraSettings,
    *,
    seed: int,
    device: torch.device,
    desc: str = "train_xtra",
) -> tuple[RetrievalAugmentedClassifier, pl.DataFrame, int]:
    """Train with masked BCE (`settings`' epochs, batch size, learning rate and weight decay); return (the
    model at its best validation epoch, per-epoch history, that epoch)."""
    batch_size = settings.batch_size
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    history, best, best_epoch, best_state = [], float("inf"), 0, None
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # dropout draws from here: seeded, global state untouched
        for epoch in tqdm(range(1, settings.epochs + 1), desc=desc, unit="epoch"):
            model.train()
            order = torch.randperm(len(train), generator=generator)
            running, seen = 0.0, 0
            for start in range(0, len(train), batch_size):
                query, keys, kinds, states, targets, mask = gather_batch(
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
    settings: XtraSettings,
    seed: int,
    threads: int = 1,
) -> None:
    """Train the X-TRA classifier and its query-only baseline; write their weights, configs and one history."""
    torch.set_num_threads(max(1, threads))
    device = choose_device(settings.device)
    memory = read_memory(memory_dir)
    train = examples(read_neighbours(train_neighbours, memory_dir), labels_path, settings.uncertain)
    validate = examples(read_neighbours(validate_neighbours, memory_dir), labels_path, settings.uncertain)
    if len(train) < 2:
        raise InputError(f"{train_neighbours} holds {len(train)} train image(s); X-TRA needs at least 2 to train.")
    never = [CHEXPERT_DISPLAY[name] for name, n in zip(CHEXPERT_LABELS, train.targets.sum(axis=0)) if n == 0]
    if never:
        log.warning("no train image is positive for %s: their logits learn only negatives", ", ".join(never))
    tokens = load_memory_tokens(memory_dir, device)
    log.info("training X-TRA on %s: %d train and %d validation queries", device, len(train), len(validate))
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    histories = []
    for method, retrieval in METHODS.items():
        started = time.perf_counter()
        model = RetrievalAugmentedClassifier(
            train.queries.shape[1],
            settings.hidden_dim,
            settings.attention_heads,
            settings.dropout,
            settings.label_tokens,
            retrieval,
            seed=seed,
        )
        model, history, epoch = fit_classifier(
            model, train, validate, tokens, settings, seed=seed, device=device, desc=f"train {method}"
        )
        extra = {
            "method": method,
            "best_epoch": epoch,
            "epochs": settings.epochs,
            "k": int(train.image_rows.shape[1]),
            "uncertain": settings.uncertain,
            "backbone": memory.get("backbone"),
            "variant": memory.get("variant"),
            "train_images": len(train),
            "seconds": round(time.perf_counter() - started, 2),
        }
        save_classifier(model.cpu(), out / f"{method}.safetensors", out / f"{method}.json", extra)
        histories.append(history.with_columns(method=pl.lit(method)))
        log.info("%s: best validation loss at epoch %d of %d", method, epoch, settings.epochs)
    pl.concat(histories).select("method", pl.exclude("method")).write_parquet(out / "history.parquet")
