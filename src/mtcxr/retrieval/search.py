"""`mtcxr search`: query an index folder written by `build_index` with an image or a report.

Every fault a user can meet (a missing or half-copied folder, a corrupt `.faiss` file, an image
that does not decode, k < 1) is a one-line `InputError` that names the file and the fix.
"""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import polars as pl
from safetensors import SafetensorError

from mtcxr.errors import InputError
from mtcxr.models.backbone import LOCAL_PREFIX
from mtcxr.retrieval.index_info import PATH_KEYS, index_backbone_spec, read_index_info

MAX_PIXELS = 60_000_000  # the schema's images.max_pixels: a query image larger than this is not a radiograph
REBUILD = "rerun `snakemake --cores all --forcerun build_index` to rebuild the index"


def input_side(visual: object, default: int = 224) -> int:
    """The image tower's input side in pixels: open_clip's ModifiedResNet gives an int, ViT and timm a tuple."""
    size = getattr(visual, "image_size", default)
    return int(max(size)) if isinstance(size, (tuple, list)) else int(size)


def _first_line(error: BaseException) -> str:
    """The first line of an exception's message, or its type when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _index_info(folder: Path) -> dict:
    """`index.json` of `folder` with resolved paths; InputError when the folder is not an index."""
    info_path = folder / "index.json"
    if not folder.is_dir():
        problem = "not a folder" if folder.exists() else "no such folder"
        raise InputError(
            f"--index {folder}: {problem}; give a folder written by build_index, "
            "e.g. results/index/demo/multitask/seed0 (run the workflow first: `snakemake --cores all`)"
        )
    if not info_path.is_file():
        raise InputError(_not_an_index(folder))
    try:
        info = read_index_info(folder)
    except (ValueError, TypeError) as error:  # bad JSON or not an object (ValueError), a path not a string
        raise InputError(f"{info_path} is not a readable index description ({error}); {REBUILD}") from None
    missing = [key for key in ("spec", "head_weights", "head_config") if not info.get(key)]
    if missing:
        raise InputError(f"{info_path} has no {', '.join(missing)}; {REBUILD}")
    for key in PATH_KEYS:
        if key != "backbone_dir" and info.get(key) and not Path(info[key]).exists():
            raise InputError(
                f"{info[key]} ({key} in {info_path}) not found; move or copy the whole results "
                f"folder together (index.json names it relative to the index folder), or {REBUILD}"
            )
    spec = index_backbone_spec(info)
    if spec.startswith(LOCAL_PREFIX) and not Path(spec[len(LOCAL_PREFIX) :]).is_dir():
        where = (
            f"neither at {info['backbone_dir']} (backbone_dir in {info_path}) nor at its spec's {info['spec']!r}"
            if info.get("backbone_dir")
            else f"not at {spec[len(LOCAL_PREFIX) :]} ({info['spec']!r} in {info_path}, relative to the working folder)"
        )
        raise InputError(
            f"the backbone folder is {where}; move or copy the whole results folder together "
            f"(index.json names a backbone under it relative to the index folder), or {REBUILD}"
        )
    return info


def _not_an_index(folder: Path) -> str:
    """What `folder` (which has no index.json) is, and which folder to pass to --index instead."""
    memory = folder / "memory.json"
    if memory.is_file():
        try:
            described = json.loads(memory.read_text())
            backbone, variant = str(described["backbone"]), str(described["variant"])
        except (ValueError, KeyError, TypeError):
            backbone, variant = "{backbone}", "{variant}"
        # results/xtra/{backbone}/{variant}/memory -> results/index/{backbone}/{variant}/seed{N}
        anchor = folder if len(folder.parents) > 3 else folder.resolve()  # as the user wrote it, where it can be
        results = anchor.parents[3] if len(anchor.parents) > 3 else Path("results")
        found = _index_folders(results / "index" / backbone / variant)
        return (
            f"--index {folder} is X-TRA's memory of the train split ({backbone} / {variant}), not a retrieval "
            f"index: mtcxr search queries the test gallery's index that build_index writes; pass "
            + (" or ".join(str(f) for f in found) if found else f"{results}/index/{backbone}/{variant}/seed<N>")
        )
    found = _index_folders(folder)
    if found:
        shown = ", ".join(str(f) for f in found[:3]) + (f" ({len(found) - 3} more)" if len(found) > 3 else "")
        return f"{folder} holds index folders but is not one itself; pass one of them to --index: {shown}"
    return (
        f"{folder / 'index.json'} not found; --index must be a folder written by build_index, "
        f"e.g. results/index/demo/multitask/seed0, or {REBUILD}"
    )


def _index_folders(folder: Path) -> list[Path]:
    """The index folders at most three levels below `folder` (a results folder's under its `index/`), sorted."""
    patterns = ["*/index.json", "*/*/index.json", "*/*/*/index.json", "index/*/*/*/index.json"]
    return sorted({path.parent for pattern in patterns for path in folder.glob(pattern)})


def _read_faiss(path: Path) -> faiss.Index:
    """Read one FAISS index file; InputError naming it when it is missing, truncated or corrupt."""
    if not path.is_file():
        raise InputError(f"{path} not found; the index folder is incomplete: {REBUILD}")
    try:
        return faiss.read_index(str(path))
    except RuntimeError as error:
        # FAISS reports a short read as a C++ assertion ("Error in … at index_read.cpp:…: Error: '…' failed:
        # read error in …"); the part after the last "Error: " says what failed.
        reason = str(error).rsplit("Error: ", 1)[-1].strip() or "unreadable"
        raise InputError(f"{path} is truncated or corrupt ({reason}); {REBUILD}") from None


def _read_rows(path: Path, columns: list[str]) -> pl.DataFrame:
    """Read the id map of an index; InputError naming it when it cannot be read."""
    try:
        return pl.read_parquet(path, columns=columns)
    except (OSError, pl.exceptions.PolarsError) as error:
        raise InputError(f"{path} is truncated or corrupt ({_first_line(error)}); {REBUILD}") from None


def search_cli(index_dir: str | Path, image: str | None, text: str | None, k: int = 5) -> None:
    """Embed a query image (or report), and print the k nearest reports (or images), one per line.

    Lines are `rank<TAB>score<TAB>study ids<TAB>report` for an image query and
    `rank<TAB>score<TAB>image id<TAB>study id` for a text query.
    """
    if k < 1:
        raise InputError(f"-k is {k}; k must be >= 1")
    if (image is None) == (text is None):
        raise InputError("give exactly one of --image and --text")
    folder = Path(index_dir)
    info = _index_info(folder)
    # The index files are checked before the backbone loads: a broken folder fails in a moment.
    name = "texts" if image is not None else "images"
    index = _read_faiss(folder / f"{name}.faiss")
    columns = ["study_ids", "report"] if image is not None else ["image_id", "study_id"]
    rows = _read_rows(folder / f"{name}.parquet", columns)
    if index.ntotal == 0 or rows.height != index.ntotal:
        raise InputError(
            f"{folder / f'{name}.faiss'} holds {index.ntotal} vectors and {folder / f'{name}.parquet'} "
            f"{rows.height} rows; {REBUILD}"
        )
    # torch and open_clip (about 10 CPU s of imports) only now, so that a bad argument or folder fails at once.
    from mtcxr.data.imaging import BadImage, load_grayscale
    from mtcxr.models.backbone import load_backbone
    from mtcxr.models.heads import load_heads, project

    try:
        heads, _ = load_heads(info["head_weights"], info["head_config"])
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as error:
        raise InputError(
            f"the heads {info['head_weights']} / {info['head_config']} cannot be loaded "
            f"({type(error).__name__}: {_first_line(error)}); "
            "rerun `snakemake --cores all --forcerun train_head`"
        ) from None
    backbone = load_backbone(index_backbone_spec(info), demo_dir=info.get("demo_dir"))
    if backbone.embed_dim != index.d:
        raise InputError(
            f"backbone {info['spec']!r} embeds in {backbone.embed_dim} dimensions and "
            f"{folder / f'{name}.faiss'} holds {index.d}; the index is stale: {REBUILD}"
        )
    if image is not None:
        try:
            picture = load_grayscale(image, input_side(backbone.model.visual), max_pixels=MAX_PIXELS)
        except BadImage as error:
            raise InputError(f"--image {image}: {error.reason}; give a PNG or JPEG radiograph") from None
        query = project(heads.image, backbone.encode_images(backbone.preprocess(picture)[None]))
    else:
        query = project(heads.text, backbone.encode_texts([text]))
    scores, found = index.search(np.ascontiguousarray(query, dtype=np.float32), min(k, index.ntotal))
    for rank, (score, row) in enumerate(zip(scores[0], found[0]), start=1):
        hit = rows.row(int(row), named=True)
        if image is not None:
            print(f"{rank}\t{score:.4f}\t{hit['study_ids']}\t{hit['report']}")
        else:
            print(f"{rank}\t{score:.4f}\t{hit['image_id']}\t{hit['study_id']}")
