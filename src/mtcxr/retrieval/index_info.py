"""The index folder's `index.json` and how to read it, and the exact FAISS index it holds: shared by
evaluation, `mtcxr search` and report generation.

File paths in `index.json` are relative to the index folder, so a results folder still works after it is
moved or copied; `read_index_info` resolves them. That includes the backbone's own folder: the demo
backbone's (`demo_dir`) and a `local-dir:` backbone's (`backbone_dir`, e.g. a fine-tuned backbone under
`models/finetuned/`); `index_backbone_spec` gives the spec to load.
"""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np

from mtcxr.models.backbone import LOCAL_PREFIX

# index.json entries that name files; stored relative to the index folder.
PATH_KEYS = ("head_weights", "head_config", "demo_dir", "backbone_dir")


def is_local(spec: str | None) -> bool:
    return bool(spec) and spec.startswith(LOCAL_PREFIX)


def index_backbone_spec(info: dict) -> str:
    """The spec to load the backbone of an index (`read_index_info`'s answer) with.

    A `local-dir:` backbone loads from `backbone_dir`, found relative to the index folder (the results
    folder moved or copied as a whole, searched from anywhere); where that folder is gone, from the
    spec's own path (a model folder outside the results folder that stayed where it was).
    Other specs (`demo` with `demo_dir`, hub and named ones) are returned as they are.
    """
    spec = info["spec"]
    folder = info.get("backbone_dir")
    if is_local(spec) and folder and (Path(folder).is_dir() or not Path(spec[len(LOCAL_PREFIX) :]).is_dir()):
        return f"{LOCAL_PREFIX}{folder}"
    return spec


def read_index_info(index_dir: str | Path) -> dict:
    """Read an index folder's `index.json`, with its file paths resolved against the folder.

    Absolute paths (indexes written before paths were relative) are kept as they are.
    """
    folder = Path(index_dir)
    info = json.loads((folder / "index.json").read_text())
    if not isinstance(info, dict):
        raise ValueError(f"{folder / 'index.json'} holds a JSON {type(info).__name__}, not an object")
    for key in PATH_KEYS:
        if info.get(key):
            info[key] = str((folder / info[key]).resolve())
    return info


def flat_ip_index(vectors: np.ndarray) -> faiss.Index:
    """An exact inner-product index (cosine similarity on L2-normalised vectors)."""
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index
