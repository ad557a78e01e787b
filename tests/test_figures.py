"""Figures drawn from tables that lack what they usually show still come out, saying why."""

from __future__ import annotations

import polars as pl

from mtcxr.figures import clinical_precision_figure
from mtcxr.tables import CONTRACTS, write_table


def test_clinical_precision_with_one_class_says_so(tmp_path, caplog):
    """A test split of one class has no normal/abnormal rows (evaluate writes none): a figure that says so."""
    row = {
        "backbone": "demo",
        "variant": "zeroshot",
        "task": "i2t",
        "metric": "precision",
        "k": 5,
        "value": 0.8,
        "n_queries": 12,
    }
    summary = pl.DataFrame([{c: row.get(c) for c in CONTRACTS["metrics"]}], schema=CONTRACTS["metrics"])
    write_table(summary, "metrics", tmp_path / "summary.parquet")
    out = tmp_path / "clinical.png"
    clinical_precision_figure(str(tmp_path / "summary.parquet"), "demo", 5, str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "no precision_normal/precision_abnormal/balanced_precision rows at k=5 for demo" in caplog.text
