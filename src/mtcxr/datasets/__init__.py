"""Dataset readers: each kind turns its own layout into the studies/images/rejects/labels tables."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from mtcxr.tables import empty_table

KINDS = ("synthetic", "mimic_cxr", "iu_xray", "manifest")


@dataclass
class IngestResult:
    """What a dataset reader returns: the four tables of the contracts (docs/design.md, Table contracts) before they are written."""

    studies: pl.DataFrame
    images: pl.DataFrame
    rejects: pl.DataFrame
    labels: pl.DataFrame

    @classmethod
    def empty(cls) -> "IngestResult":
        return cls(*(empty_table(name) for name in ("studies", "images", "rejects", "labels")))


def read_dataset(dataset_cfg: dict, text_section: str, seed: int, work_dir: str | None = None,
                 image_headers: bool = True) -> IngestResult:
    """Read the dataset described by the config's `dataset:` mapping into contract tables.

    `work_dir` is where a generated dataset (synthetic) writes its image files. With
    `image_headers=False` the IU X-ray and manifest readers open no image (width and
    height stay null).
    """
    from mtcxr.datasets.errors import DatasetError

    kind = dataset_cfg.get("kind")
    if kind == "synthetic":
        from mtcxr.synthetic import read_synthetic

        return read_synthetic(dataset_cfg, text_section, seed, work_dir)
    if kind == "mimic_cxr":
        from mtcxr.datasets.mimic_cxr import read_mimic_cxr

        return read_mimic_cxr(dataset_cfg, text_section, seed)
    if kind == "iu_xray":
        from mtcxr.datasets.iu_xray import read_iu_xray

        return read_iu_xray(dataset_cfg, text_section, seed, image_headers=image_headers)
    if kind == "manifest":
        from mtcxr.datasets.manifest import read_manifest

        return read_manifest(dataset_cfg, text_section, seed, image_headers=image_headers)
    raise DatasetError(f"dataset.kind is {kind!r}; choose one of {list(KINDS)} in the config's `dataset:` section.")
