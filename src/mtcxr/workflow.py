"""Checks that run when the Snakefile is parsed, before any job starts (DESIGN §10)."""

from __future__ import annotations

from pathlib import Path

from mtcxr.backbone import BackboneError, check_backbone_available


class ConfigError(ValueError):
    """The config as a whole is unusable; the message names the key and the fix."""


def demo_backbone_used(config: dict) -> bool:
    return any(spec == "demo" for spec in config.get("backbones", {}).values())


def _require_path(config: dict, key: str, what: str) -> Path:
    value = config["dataset"].get(key)
    if not value:
        raise ConfigError(f"dataset.{key} is not set; dataset.kind {config['dataset']['kind']} needs it: {what}.")
    path = Path(value)
    if not path.exists():
        raise ConfigError(f"dataset.{key}: {path} does not exist; {what}.")
    return path


def preflight(config: dict) -> None:
    """Stop with one clear message if the dataset's files or a backbone's weights cannot be found."""
    kind = config["dataset"]["kind"]
    if kind == "mimic_cxr":
        _require_path(config, "root", "point it at the MIMIC-CXR-JPG folder holding files/ and the metadata CSVs")
    elif kind == "iu_xray":
        _require_path(config, "root", "point it at the IU X-ray folder holding indiana_reports.csv")
    elif kind == "manifest":
        _require_path(config, "manifest", "point it at your CSV or Parquet manifest")
    if "zeroshot" not in config["variants"]:
        raise ConfigError("variants: `zeroshot` is missing; it is the baseline every variant is compared against.")
    for name, spec in config["backbones"].items():
        try:
            check_backbone_available(spec)
        except BackboneError as error:
            raise ConfigError(f"backbones.{name}: {error}") from None
