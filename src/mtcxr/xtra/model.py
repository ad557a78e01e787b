"""X-TRA's retrieval-augmented classifier: a query image attends over its retrieved neighbours.

The query embedding (projected, D) becomes one attention query; its k image neighbours and k
report neighbours become 2k key/value tokens, each its memory embedding projected to the
hidden width, plus a learned embedding of its kind (image or report) and, with
`label_tokens`, of its labels: one learned vector per (observation, state) for the 14
CheXpert observations and the four states not mentioned / negative / uncertain / positive,
summed over the observations. Multi-head attention (`nn.MultiheadAttention`) pools the
tokens; the pooled vector, concatenated with the query's, feeds an MLP giving 14 logits.
Without retrieval (`retrieval=False`) the same MLP sees the query alone: the baseline that
isolates what the neighbours add.

Also what training (`train_xtra`) and scoring (`evaluate_xtra`) share, so that neither stage imports
the other: the methods, a split's examples, the memory's neighbour tokens and prediction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl
import torch
from torch import nn

from mtcxr.embedding_io import read_embeddings, writable
from mtcxr.tables import CHEXPERT_LABELS, read_table

N_LABELS = len(CHEXPERT_LABELS)
STATES = 4  # 0 not mentioned, 1 negative, 2 uncertain, 3 positive
IMAGE_TOKEN, REPORT_TOKEN = 0, 1
METHODS = {"xtra": True, "query_only": False}  # method -> whether it attends over the neighbours


def label_states(labels: pl.DataFrame) -> np.ndarray:
    """Return (n, 14) int64 states from a labels table's CheXpert columns (null 0, 0 -> 1, -1 -> 2, 1 -> 3)."""
    values = np.stack([labels[name].cast(pl.Int64).fill_null(-9).to_numpy() for name in CHEXPERT_LABELS], axis=1)
    states = np.zeros(values.shape, dtype=np.int64)
    states[values == 0], states[values == -1], states[values == 1] = 1, 2, 3
    return states


def targets_and_mask(states: np.ndarray, uncertain: str) -> tuple[np.ndarray, np.ndarray]:
    """(targets, mask) float32 for BCE and AUC: positive 1, negative or not mentioned 0, uncertain by policy.

    `ignore` (CheXpert's U-Ignore) masks uncertain labels out; `zeros` / `ones` count them as
    negative / positive.
    """
    targets = (states == 3).astype(np.float32)
    mask = np.ones(states.shape, dtype=np.float32)
    if uncertain == "ones":
        targets[states == 2] = 1.0
    elif uncertain == "ignore":
        mask[states == 2] = 0.0
    elif uncertain != "zeros":
        raise ValueError(f"xtra.uncertain is {uncertain!r}; choose ignore, zeros or ones")
    return targets, mask


class RetrievalAugmentedClassifier(nn.Module):
    """14-label classifier of a query embedding, attending over neighbour tokens when `retrieval`."""

    def __init__(
        self,
        dim: int,
        hidden_dim: int,
        attention_heads: int,
        dropout: float,
        label_tokens: bool,
        retrieval: bool,
        *,
        seed: int,
    ):
        super().__init__()
        if hidden_dim % attention_heads:
            raise ValueError(
                f"xtra.hidden_dim ({hidden_dim}) must be a multiple of xtra.attention_heads ({attention_heads})"
            )
        self.config = {
            "dim": dim,
            "hidden_dim": hidden_dim,
            "attention_heads": attention_heads,
            "dropout": dropout,
            "label_tokens": label_tokens,
            "retrieval": retrieval,
        }
        # Initialised from `seed` alone, without touching the global RNG (as the projector heads).
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            self.query = nn.Linear(dim, hidden_dim)
            if retrieval:
                self.token = nn.Linear(dim, hidden_dim)
                self.kind = nn.Embedding(2, hidden_dim)
                self.labels = nn.Embedding(N_LABELS * STATES, hidden_dim) if label_tokens else None
                self.attention = nn.MultiheadAttention(hidden_dim, attention_heads, dropout=dropout, batch_first=True)
                self.token_norm = nn.LayerNorm(hidden_dim)
            width = hidden_dim * (2 if retrieval else 1)
            self.classifier = nn.Sequential(
                nn.LayerNorm(width),
                nn.Linear(width, hidden_dim),
                nn.GELU(),
                nn.Dropout(dropout),
                nn.Linear(hidden_dim, N_LABELS),
            )
        self.register_buffer("label_offsets", torch.arange(N_LABELS) * STATES, persistent=False)

    def forward(
        self,
        query: torch.Tensor,
        tokens: torch.Tensor | None = None,
        kinds: torch.Tensor | None = None,
        states: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, 14) of queries (B, D), with tokens (B, T, D), their kinds (B, T) and label states (B, T, 14)."""
        hidden = self.query(query)
        if not self.config["retrieval"]:
            return self.classifier(hidden)
        keys = self._keys(tokens, kinds, states)
        pooled, _ = self.attention(hidden[:, None, :], keys, keys, need_weights=False)
        return self.classifier(torch.cat([hidden, pooled[:, 0]], dim=-1))

    def _keys(self, tokens: torch.Tensor, kinds: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        keys = self.token(tokens) + self.kind(kinds)
        if self.labels is not None:
            keys = keys + self.labels(states + self.label_offsets).sum(dim=2)
        return self.token_norm(keys)

    def attention_weights(
        self, query: torch.Tensor, tokens: torch.Tensor, kinds: torch.Tensor, states: torch.Tensor
    ) -> torch.Tensor:
        """(B, T) attention of each query over its neighbour tokens, averaged over heads (rows sum to 1)."""
        if not self.config["retrieval"]:
            raise ValueError("a query-only classifier (retrieval=False) attends over no neighbours")
        keys = self._keys(tokens, kinds, states)
        _, weights = self.attention(
            self.query(query)[:, None, :], keys, keys, need_weights=True, average_attn_weights=True
        )
        return weights[:, 0]


class NeighbourTokens:
    """Gathers a batch's neighbour tokens from the memory on the fly, so memory use stays O(batch)."""

    def __init__(
        self,
        memory_images: np.ndarray,
        memory_reports: np.ndarray,
        image_states: np.ndarray,
        report_states: np.ndarray,
        device: torch.device,
    ):
        # The memory's vectors are zero-copy reads of its Parquet files, hence read-only: copied once here.
        self.images = torch.from_numpy(writable(np.ascontiguousarray(memory_images))).to(device)
        self.reports = torch.from_numpy(writable(np.ascontiguousarray(memory_reports))).to(device)
        self.image_states = torch.from_numpy(image_states).to(device)
        self.report_states = torch.from_numpy(report_states).to(device)

    def __call__(self, image_rows: torch.Tensor, report_rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(tokens (B, 2k, D), kinds (B, 2k), states (B, 2k, 14)) for rows (B, k) into memory images and reports."""
        tokens = torch.cat([self.images[image_rows], self.reports[report_rows]], dim=1)
        kinds = torch.cat([torch.full_like(image_rows, IMAGE_TOKEN), torch.full_like(report_rows, REPORT_TOKEN)], dim=1)
        states = torch.cat([self.image_states[image_rows], self.report_states[report_rows]], dim=1)
        return tokens, kinds, states


def save_classifier(
    model: RetrievalAugmentedClassifier, weights_path: str | Path, config_path: str | Path, extra: dict
) -> None:
    """Write the classifier's weights (safetensors) and JSON config (+ training facts in `extra`)."""
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(weights_path))
    Path(config_path).write_text(json.dumps({**model.config, **extra}, indent=2, sort_keys=True) + "\n")


def load_classifier(weights_path: str | Path, config_path: str | Path) -> tuple[RetrievalAugmentedClassifier, dict]:
    """Load a classifier written by `save_classifier` (safetensors: no unpickling); return (model, config)."""
    from safetensors.torch import load_file

    config = json.loads(Path(config_path).read_text())
    model = RetrievalAugmentedClassifier(
        config["dim"],
        config["hidden_dim"],
        config["attention_heads"],
        config["dropout"],
        config["label_tokens"],
        config["retrieval"],
        seed=0,
    )
    model.load_state_dict(load_file(str(weights_path)))
    return model.eval(), config


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


class NeighbourRows(Protocol):
    """What `examples` reads of a split's neighbours table (as its reader returns it)."""

    study_ids: np.ndarray  # (N,) each query image's study
    queries: np.ndarray  # (N, D)
    image_rows: np.ndarray  # (N, k)
    report_rows: np.ndarray  # (N, k)


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


def examples(neighbours: NeighbourRows, labels_path: str | Path, uncertain: str) -> Examples:
    """Join a split's neighbours with its studies' labels into training (or scoring) examples."""
    labels = read_table(labels_path, "labels")
    joined = pl.DataFrame({"study_id": neighbours.study_ids}).join(
        labels, on="study_id", how="left", maintain_order="left"
    )
    targets, mask = targets_and_mask(label_states(joined), uncertain)
    return Examples(neighbours.queries, neighbours.image_rows, neighbours.report_rows, targets, mask)


def gather_batch(
    data: Examples, rows: torch.Tensor, tokens: NeighbourTokens, device: torch.device
) -> tuple[torch.Tensor, ...]:
    """(query, neighbour tokens, kinds, states, targets, mask) of the examples at `rows`, on `device`."""
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
        query, keys, kinds, states, _, _ = gather_batch(data, rows, tokens, device)
        out[start : start + len(rows)] = torch.sigmoid(model(query, keys, kinds, states)).cpu().numpy()
    return out
