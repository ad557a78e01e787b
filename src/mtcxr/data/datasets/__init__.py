"""Dataset readers: each kind turns its own layout into the studies/images/rejects/labels tables."""

from __future__ import annotations

# The readers import their shared names from `assembly`, never from this package, so that the
# lazy reader imports below close no circle.
from mtcxr.data.datasets.assembly import IngestResult

KINDS = ("synthetic", "mimic_cxr", "iu_xray", "manifest")

__all__ = ["KINDS", "IngestResult", "read_dataset"]


def read_dataset(
    dataset_cfg: dict, text_section: str, seed: int, work_dir: str | None = None, image_headers: bool = True
) -> IngestResult:
    """Read the dataset described by the config's `dataset:` mapping into contract tables.

    `work_dir` is where a generated dataset (synthetic) writes its image files. With
    `image_headers=False` the IU X-ray and manifest readers open no image (width and
    height stay null).
    """
    from mtcxr.data.datasets.errors import DatasetError

    kind = dataset_cfg.get("kind")
    if kind == "synthetic":
        from mtcxr.data.datasets.synthetic import read_synthetic

        return read_synthetic(dataset_cfg, text_section, seed, work_dir)
    if kind == "mimic_cxr":
        from mtcxr.data.datasets.mimic_cxr import read_mimic_cxr

        return read_mimic_cxr(dataset_cfg, text_section, seed)
    if kind == "iu_xray":
        from mtcxr.data.datasets.iu_xray import read_iu_xray

        return read_iu_xray(dataset_cfg, text_section, seed, image_headers=image_headers)
    if kind == "manifest":
        from mtcxr.data.datasets.manifest import read_manifest

        return read_manifest(dataset_cfg, text_section, seed, image_headers=image_headers)
    raise DatasetError(f"dataset.kind is {kind!r}; choose one of {list(KINDS)} in the config's `dataset:` section.")
