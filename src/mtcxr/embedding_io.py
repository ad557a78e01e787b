"""Embedding tables: Parquet with an id column and `embedding` as fixed_size_list<float32>[D].

The file's key-value metadata records the backbone spec, the dimension and whether vectors are
L2-normalised, so a stage never has to guess what it was handed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

METADATA_KEY = b"mtcxr"


def embedding_schema(
    id_column: str, dim: int, metadata: dict, extra: dict[str, pa.DataType] | None = None
) -> pa.Schema:
    """Schema of an embedding table: id, optional extra columns, then the vector column."""
    fields = [pa.field(id_column, pa.string(), nullable=False)]
    fields += [pa.field(name, dtype) for name, dtype in (extra or {}).items()]
    fields.append(pa.field("embedding", pa.list_(pa.float32(), dim), nullable=False))
    return pa.schema(fields, metadata={METADATA_KEY: json.dumps({"dim": dim, **metadata}).encode()})


def embedding_array(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """Wrap an (N, D) float32 matrix as a FixedSizeListArray without copying it."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])


def write_embeddings(
    path: str | Path,
    id_column: str,
    ids: list[str],
    vectors: np.ndarray,
    metadata: dict,
    extra_columns: dict[str, list | np.ndarray] | None = None,
) -> None:
    """Write ids and their vectors (plus optional extra columns) as an embedding table."""
    extra_columns = extra_columns or {}
    # A list is a string column (ids, texts); a numpy array keeps its own type (bool flags, counts).
    extra = [pa.array(values, pa.string() if isinstance(values, list) else None) for values in extra_columns.values()]
    extra_types = {name: array.type for name, array in zip(extra_columns, extra)}
    schema = embedding_schema(id_column, vectors.shape[1], metadata, extra_types)
    columns = [pa.array(ids, pa.string())] + extra
    table = pa.Table.from_arrays(columns + [embedding_array(vectors)], schema=schema)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


class EmbeddingWriter:
    """Append batches of (ids, vectors) to an embedding table, so memory stays flat."""

    def __init__(self, path: str | Path, id_column: str, dim: int, metadata: dict):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.schema = embedding_schema(id_column, dim, metadata)
        self.writer = pq.ParquetWriter(path, self.schema)
        self.rows = 0

    def write(self, ids: list[str], vectors: np.ndarray) -> None:
        batch = pa.RecordBatch.from_arrays([pa.array(ids, pa.string()), embedding_array(vectors)], schema=self.schema)
        self.writer.write_batch(batch)
        self.rows += len(ids)

    def close(self) -> None:
        self.writer.close()

    def __enter__(self) -> EmbeddingWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_embeddings(paths: str | Path | list, id_column: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """Read one or more embedding tables; return (ids, float32 matrix (N, D), metadata).

    The matrix is a view of Arrow's buffer when the data is in a single chunk (no copy).
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    tables = [pq.read_table(path) for path in paths]
    metadata = read_metadata(paths[0]) if paths else {}
    for path, table in zip(paths, tables):
        if id_column not in table.column_names or "embedding" not in table.column_names:
            raise ValueError(
                f"{path}: an embedding table needs columns {id_column!r} and 'embedding'; it has {table.column_names}"
            )
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    column = table.column("embedding").combine_chunks()
    dim = column.type.list_size
    vectors = (
        column.values.to_numpy(zero_copy_only=True).reshape(-1, dim) if len(column) else np.zeros((0, dim), np.float32)
    )
    ids = np.asarray(table.column(id_column).to_pylist(), dtype=object)
    return ids, vectors, metadata


def writable(array: np.ndarray) -> np.ndarray:
    """`array`, or a copy where it is read-only (a zero-copy read above): for `torch.from_numpy`, whose
    tensors are writable, so that a read-only buffer is never handed to code that may write to it."""
    return array if array.flags.writeable else array.copy()


def read_metadata(path: str | Path) -> dict:
    """The mtcxr metadata of an embedding table (spec, dim, normalized, …)."""
    raw = pq.read_schema(path).metadata or {}
    return json.loads(raw.get(METADATA_KEY, b"{}"))
