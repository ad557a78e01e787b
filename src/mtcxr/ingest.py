"""Stage `ingest`: read the configured dataset and write the studies, images, rejects and dataset-labels tables."""

from __future__ import annotations

import logging

from mtcxr.datasets import read_dataset
from mtcxr.datasets.splits import check_split_hygiene
from mtcxr.tables import write_table

log = logging.getLogger(__name__)


class BadItemsError(RuntimeError):
    """Raised when items were rejected and the config says `on_bad_item: fail`."""


def ingest(dataset_cfg: dict, text_section: str, seed: int, output_studies: str, output_images: str,
           output_rejects: str, output_labels: str, work_dir: str, on_bad_item: str = "reject") -> None:
    """Read the dataset and write its four contract tables; stop on a patient in two splits."""
    result = read_dataset(dataset_cfg, text_section, seed, work_dir=work_dir)
    check_split_hygiene(result.studies, "studies")
    check_split_hygiene(result.images, "images")
    if result.rejects.height and on_bad_item == "fail":
        first = result.rejects.row(0, named=True)
        raise BadItemsError(f"{result.rejects.height} item(s) rejected at ingest, first: {first['item']}: {first['reason']}. "
                            "Fix them or set on_bad_item: reject to go on without them.")
    studies = write_table(result.studies, "studies", output_studies)
    images = write_table(result.images, "images", output_images)
    write_table(result.rejects, "rejects", output_rejects)
    write_table(result.labels, "labels", output_labels)
    counts = studies.group_by("split").len().sort("split").rows()
    log.info("ingested %d studies (%s), %d images, %d rejected, %d dataset labels", studies.height,
             ", ".join(f"{split} {n}" for split, n in counts), images.height, result.rejects.height, result.labels.height)
    if result.rejects.height:
        log.warning("%d item(s) rejected at ingest; see %s", result.rejects.height, output_rejects)
