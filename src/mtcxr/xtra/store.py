"""X-TRA's files and how to read them: the memory folder (`build_memory`) and the neighbour tables
(`retrieve_neighbours`), shared by the stages that build on them (training, evaluation, generation).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from mtcxr.embedding_io import read_embeddings
from mtcxr.errors import InputError

KINDS = ("i2i", "i2r")  # image->image and image->report neighbours


def read_memory(memory_dir: str | Path) -> dict:
    """Return a memory folder's memory.json, or raise InputError naming the folder and how to build it."""
    path = Path(memory_dir) / "memory.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InputError(
            f"{path} cannot be read ({error}); rebuild it with `snakemake --forcerun build_memory`."
        ) from None


@dataclass
class Neighbours:
    """One split's queries with their neighbours as row numbers into the memory's images and reports."""

    image_ids: np.ndarray  # (Q,) str
    study_ids: np.ndarray  # (Q,) str
    queries: np.ndarray  # (Q, D) float32, projected
    image_rows: np.ndarray  # (Q, k) int64 rows of the memory's images
    image_scores: np.ndarray  # (Q, k) float32
    report_rows: np.ndarray  # (Q, k) int64 rows of the memory's reports
    report_scores: np.ndarray  # (Q, k) float32


def read_neighbours(path: str | Path, memory_dir: str | Path) -> Neighbours:
    """Read a neighbours table as row numbers into the memory at `memory_dir`; InputError when they disagree."""
    image_ids, queries, _ = read_embeddings(path, "image_id")
    table = pl.read_parquet(
        path, columns=["study_id", *(f"{kind}_{part}" for kind in KINDS for part in ("ids", "scores"))]
    )
    folder = Path(memory_dir)
    rows = {}
    for kind, name, id_column in (("i2i", "images", "image_id"), ("i2r", "reports", "study_id")):
        entry_ids = pl.read_parquet(folder / f"{name}.parquet", columns=[id_column])[id_column].to_list()
        position = {entry: row for row, entry in enumerate(entry_ids)}
        lists = table[f"{kind}_ids"].to_list()
        try:
            rows[kind] = np.array([[position[entry] for entry in row] for row in lists], dtype=np.int64)
        except KeyError as missing:
            raise InputError(
                f"{path} names {kind} neighbour {missing} that is not in the memory {folder}; "
                "rerun `snakemake --forcerun retrieve_neighbours`."
            ) from None
        rows[f"{kind}_scores"] = np.array(table[f"{kind}_scores"].to_list(), dtype=np.float32)
    k = rows["i2i"].shape[1] if rows["i2i"].ndim == 2 else 0
    empty = np.zeros((0, k), dtype=np.int64)
    return Neighbours(
        image_ids=image_ids,
        study_ids=table["study_id"].to_numpy(),
        queries=queries,
        image_rows=rows["i2i"] if len(image_ids) else empty,
        image_scores=rows["i2i_scores"].reshape(len(image_ids), -1),
        report_rows=rows["i2r"] if len(image_ids) else empty,
        report_scores=rows["i2r_scores"].reshape(len(image_ids), -1),
    )
