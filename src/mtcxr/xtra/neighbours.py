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

from mtcxr.data.embedded_split import load_projected, patients_of_studies
from mtcxr.embedding_io import embedding_array, embedding_schema
from mtcxr.errors import InputError
from mtcxr.xtra import ann
from mtcxr.xtra.store import KINDS, read_memory

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NeighbourSettings:
    """What decides the neighbours: X-TRA's k, the search-time index knobs (`index:`), the views kept."""

    k: int
    index: dict
    frontal_only: bool


def retrieve_neighbours(
    memory_dir: str, projected_dir: str, split: str, output: str, settings: NeighbourSettings
) -> int:
    """Search the memory for every image of `split`; write the neighbours table; return the number of queries."""
    k, index_cfg = settings.k, settings.index
    memory = read_memory(memory_dir)
    queries = load_projected(projected_dir, split, settings.frontal_only)
    _check_same_space(memory, queries.metadata, memory_dir, projected_dir)
    vectors = queries.image_vectors
    patient_of_study = patients_of_studies(projected_dir)
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


def _check_same_space(memory: dict, metadata: dict, memory_dir: str, projected_dir: str) -> None:
    """Raise InputError when the queries' embeddings come from another backbone than the memory's."""
    if memory.get("spec") != metadata.get("spec") or memory.get("dim") != metadata.get("dim"):
        raise InputError(
            f"the memory {memory_dir} was built from {memory.get('spec')!r} embeddings (dim {memory.get('dim')}), "
            f"but the queries {projected_dir} are {metadata.get('spec')!r} (dim "
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
