"""Stage `ingest`: read the configured dataset and write the studies, images, rejects and dataset-labels tables."""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl

from mtcxr.datasets import read_dataset
from mtcxr.datasets.splits import check_split_hygiene
from mtcxr.tables import read_table, write_table

log = logging.getLogger(__name__)


class BadItemsError(RuntimeError):
    """Raised when items were rejected and the config says `on_bad_item: fail`."""


def ingest(dataset_cfg: dict, text_section: str, seed: int, output_studies: str, output_images: str,
           output_rejects: str, output_labels: str, work_dir: str, on_bad_item: str = "reject") -> None:
    """Read the dataset and write its four contract tables; stop on a patient in two splits."""
    outputs = {"studies": output_studies, "images": output_images, "rejects": output_rejects, "labels": output_labels}
    if dataset_cfg.get("kind") == "mimic_cxr":
        from mtcxr.datasets.mimic_cxr import write_mimic_cxr

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
        first = rejects.row(0, named=True)
        raise BadItemsError(f"{rejects.height} item(s) rejected at ingest, first: {first['item']}: {first['reason']}. "
                            "Fix them or set on_bad_item: reject to go on without them.")
    splits = pl.scan_parquet(output_studies).group_by("split").len().sort("split").collect().rows()
    rows = {name: pl.scan_parquet(path).select(pl.len()).collect().item() for name, path in outputs.items()}
    log.info("ingested %d studies (%s), %d images, %d rejected, %d dataset labels", rows["studies"],
             ", ".join(f"{split} {n}" for split, n in splits), rows["images"], rows["rejects"], rows["labels"])
    if rejects.height:
        log.warning("%d item(s) rejected at ingest; see %s", rejects.height, output_rejects)
