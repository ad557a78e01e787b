"""Stage `retrieve_neighbours`: every image's top-k neighbours in X-TRA's memory, one table per split.

A query is an image of the split (frontal ones when `images.frontal_only`), projected through
the same heads as the memory. It retrieves the k nearest memory images (image->image) and the
k nearest memory reports (image->report), never an entry of its own patient, hence never of
its own study: a train image would otherwise find itself, or its own report, and learn to
copy labels it is meant to predict. Training and evaluation read these tables instead of
searching again.

Table (Parquet, one row per query image, in image_id order): `image_id`, `study_id`,
`patient_id`, `i2i_ids` list<str> (memory image ids, best first), `i2i_scores` list<float32>
(cosine), `i2r_ids` list<str> (memory study ids), `i2r_scores` list<float32>, and `embedding`
fixed_size_list<float32>[D] (the projected query), with the embedding metadata of
`mtcxr.embedding_io` (spec, dim, memory folder).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from mtcxr.data.embedded_split import load_split
from mtcxr.embedding_io import embedding_array, embedding_schema, read_embeddings
from mtcxr.errors import InputError
from mtcxr.models.heads import load_heads, project
from mtcxr.tables import read_table
from mtcxr.xtra import ann
from mtcxr.xtra.memory import read_memory

log = logging.getLogger(__name__)

KINDS = ("i2i", "i2r")  # image->image and image->report neighbours


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


def retrieve_neighbours(
    memory_dir: str,
    image_embeddings: list[str],
    text_embeddings: str,
    images_path: str,
    studies_path: str,
    labels_path: str,
    head_weights: str,
    head_config: str,
    split: str,
    k: int,
    index_cfg: dict,
    output: str,
    frontal_only: bool,
) -> int:
    """Search the memory for every image of `split`; write the neighbours table; return the number of queries."""
    memory = read_memory(memory_dir)
    queries = load_split(image_embeddings, text_embeddings, images_path, studies_path, labels_path, split, frontal_only)
    _check_same_space(memory, queries.metadata, memory_dir, image_embeddings)
    heads, _ = load_heads(head_weights, head_config)
    vectors = project(heads.image, queries.image_vectors)
    patient_of_study = dict(read_table(studies_path, "studies").select("study_id", "patient_id").iter_rows())
    query_studies = queries.study_ids[queries.image_study]
    query_patients = np.array([patient_of_study[s] for s in query_studies], dtype=object)

    folder = Path(memory_dir)
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for kind, table, id_column in (("i2i", "images", "image_id"), ("i2r", "reports", "study_id")):
        entries = pl.read_parquet(folder / f"{table}.parquet", columns=[id_column, "patient_id"])
        codes = _patient_codes(entries["patient_id"].to_numpy(), query_patients)
        index = faiss.read_index(str(folder / f"{table}.faiss"))
        _apply_search_settings(index, index_cfg)
        scores, rows = ann.search_excluding(
            index, vectors, k, codes["queries"], codes["entries"], progress=f"{split} {kind} neighbours"
        )
        if len(rows) and (rows < 0).any():
            short = int((rows < 0).any(axis=1).sum())
            raise InputError(
                f"xtra.k is {k}, but the memory's {table} ({index.ntotal} entries) hold fewer than {k} outside the "
                f"patient of {short} {split} image(s); lower xtra.k to at most the memory size less the largest "
                "patient's entries, or use more train data."
            )
        ids = entries[id_column].to_numpy()
        found[kind] = (ids[rows], scores)
    _write(output, queries.image_ids, query_studies, query_patients, found, vectors, memory, memory_dir)
    log.info("%s: %d queries, %d image and %d report neighbours each (own patient excluded)", split, len(vectors), k, k)
    return len(vectors)


def _check_same_space(memory: dict, metadata: dict, memory_dir: str, embeddings: list[str]) -> None:
    """Raise InputError when the queries' embeddings come from another backbone than the memory's."""
    if memory.get("spec") != metadata.get("spec") or memory.get("dim") != metadata.get("dim"):
        raise InputError(
            f"the memory {memory_dir} was built from {memory.get('spec')!r} embeddings (dim {memory.get('dim')}), "
            f"but the queries {embeddings[0] if embeddings else ''} are {metadata.get('spec')!r} (dim "
            f"{metadata.get('dim')}): neighbours across embedding spaces mean nothing. Rebuild the memory "
            "(`snakemake --forcerun build_memory`)."
        )


def _patient_codes(entry_patients: np.ndarray, query_patients: np.ndarray) -> dict[str, np.ndarray]:
    """Integer codes shared by memory entries and queries, so that the search can exclude a query's patient."""
    codes = {patient: code for code, patient in enumerate(dict.fromkeys([*entry_patients, *query_patients]))}
    return {
        "entries": np.array([codes[p] for p in entry_patients], dtype=np.int64),
        "queries": np.array([codes[p] for p in query_patients], dtype=np.int64),
    }


def _apply_search_settings(index: faiss.Index, index_cfg: dict) -> None:
    """Set the search-time knobs of an approximate index (a memory built with others keeps its structure)."""
    if isinstance(index, faiss.IndexIVF):
        index.nprobe = index_cfg["nprobe"]
    elif isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = index_cfg["ef_search"]


def _write(
    output: str,
    image_ids: np.ndarray,
    study_ids: np.ndarray,
    patient_ids: np.ndarray,
    found: dict[str, tuple[np.ndarray, np.ndarray]],
    vectors: np.ndarray,
    memory: dict,
    memory_dir: str,
) -> None:
    extra = {"study_id": pa.string(), "patient_id": pa.string()}
    for kind in KINDS:
        extra[f"{kind}_ids"] = pa.list_(pa.string())
        extra[f"{kind}_scores"] = pa.list_(pa.float32())
    metadata = {key: memory.get(key) for key in ("backbone", "variant", "spec")} | {
        "normalized": True,
        "memory": str(Path(memory_dir).name),
        "index": memory.get("index", {}).get("kind"),
    }
    schema = embedding_schema("image_id", vectors.shape[1], metadata, extra)
    columns = [
        pa.array(list(image_ids), pa.string()),
        pa.array(list(study_ids), pa.string()),
        pa.array(list(patient_ids), pa.string()),
    ]
    for kind in KINDS:
        ids, scores = found[kind]
        columns += [
            pa.array([list(row) for row in ids], pa.list_(pa.string())),
            pa.array([list(row) for row in scores.astype(np.float32)], pa.list_(pa.float32())),
        ]
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_arrays([*columns, embedding_array(vectors)], schema=schema), output)


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
