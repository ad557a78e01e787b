"""Stage `ingest`: read the configured dataset and write the studies, images, rejects and dataset-labels tables."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import polars as pl

from mtcxr.data.datasets import read_dataset
from mtcxr.data.datasets.iu_xray import PROJECTIONS, REPORTS
from mtcxr.data.datasets.splits import check_split_hygiene
from mtcxr.data.text import check_section
from mtcxr.errors import InputError
from mtcxr.tables import read_table, write_table

log = logging.getLogger(__name__)


class BadItemsError(InputError, RuntimeError):
    """Raised when items were rejected and the config says `on_bad_item: fail`."""


def bad_items_error(rejects: pl.DataFrame, stage: str, shown: int = 3) -> BadItemsError:
    """The error `on_bad_item: fail` stops with: how many items `stage` rejected, and the first few with why."""
    first = "; ".join(f"{row['item']}: {row['reason']}" for row in rejects.head(shown).iter_rows(named=True))
    return BadItemsError(
        f"{rejects.height} item(s) rejected at {stage}, first: {first}. "
        "Fix them or set on_bad_item: reject to go on without them."
    )


def ingest_inputs(
    dataset_cfg: dict,
    text_section: str,
    seed: int,
    on_bad_item: str,
    check: Callable[[pl.DataFrame, pl.DataFrame], object] | None = None,
) -> list[str]:
    """Return the files ingest reads, after checking the dataset as a whole (raising an InputError).

    Run by the workflow before any job starts, so that a fault in the whole input stops
    the run with its message alone, and so that Snakemake reruns ingest (and everything
    downstream) when any of these files changes. The IU X-ray and manifest readers run in
    full, opening no image: their whole-input faults and, under `on_bad_item: fail`, their
    first rejected item stop the run here. For an image that does not exist (preprocessing
    rejects it), its folder is listed instead, so that adding the file reruns ingest. MIMIC-CXR
    is only located here (its CSVs and reports; reading them takes a minute): its images are
    read by preprocessing, not ingest, and PhysioNet's releases never change in place.
    `check(studies, images)`, where given, is run on the tables a reader returned (not for
    synthetic or MIMIC-CXR data, which are not read here): a later stage's check on the whole input.
    """
    kind = dataset_cfg.get("kind")
    if kind == "synthetic":
        return []
    if kind == "mimic_cxr":
        from mtcxr.data.datasets.assembly import dataset_options
        from mtcxr.data.datasets.mimic_cxr import mimic_cxr_files

        check_section(text_section)
        dataset_options(dataset_cfg)
        return [str(path) for path in mimic_cxr_files(dataset_cfg) if path is not None]
    result = read_dataset(dataset_cfg, text_section, seed, image_headers=False)
    if on_bad_item == "fail" and result.rejects.height:
        raise bad_items_error(result.rejects, "ingest")
    if check is not None:
        check(result.studies, result.images)
    if kind == "manifest":
        sources = [Path(dataset_cfg["manifest"]).expanduser()]
    else:
        root = Path(dataset_cfg["root"]).expanduser()
        sources = [root / REPORTS, root / PROJECTIONS]
    images = result.images["path"].to_list()
    present = [path for path in images if os.path.isfile(path)]
    folders = {os.path.dirname(path) for path in set(images) - set(present)}
    return [str(path) for path in sources] + present + sorted(folder for folder in folders if os.path.isdir(folder))


def ingest(
    dataset_cfg: dict,
    text_section: str,
    seed: int,
    output_studies: str,
    output_images: str,
    output_rejects: str,
    output_labels: str,
    work_dir: str,
    on_bad_item: str = "reject",
) -> None:
    """Read the dataset and write its four contract tables; stop on a patient in two splits."""
    outputs = {"studies": output_studies, "images": output_images, "rejects": output_rejects, "labels": output_labels}
    if dataset_cfg.get("kind") == "mimic_cxr":
        from mtcxr.data.datasets.mimic_cxr import write_mimic_cxr

        # MIMIC-sized: the reader writes its tables a chunk at a time so that memory does not grow
        # with the report text (benchmarks/datasets.md); it checks the splits itself.
        write_mimic_cxr(dataset_cfg, text_section, outputs)
    else:
        result = read_dataset(dataset_cfg, text_section, seed, work_dir=work_dir)
        check_split_hygiene(result.studies, "studies")
        check_split_hygiene(result.images, "images")
        for name, path in outputs.items():
            write_table(getattr(result, name), name, path)
    rejects = read_table(output_rejects, "rejects")
    if rejects.height and on_bad_item == "fail":
        for path in outputs.values():
            Path(path).unlink()
        raise bad_items_error(rejects, "ingest")
    splits = pl.scan_parquet(output_studies).group_by("split").len().sort("split").collect().rows()
    rows = {name: pl.scan_parquet(path).select(pl.len()).collect().item() for name, path in outputs.items()}
    log.info(
        "ingested %d studies (%s), %d images, %d rejected, %d dataset labels",
        rows["studies"],
        ", ".join(f"{split} {n}" for split, n in splits),
        rows["images"],
        rows["rejects"],
        rows["labels"],
    )
    if rejects.height:
        log.warning("%d item(s) rejected at ingest; see %s", rejects.height, output_rejects)
