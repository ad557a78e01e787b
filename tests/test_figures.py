"""Figures drawn from tables that lack what they usually show still come out, saying why."""

from __future__ import annotations

import numpy as np
import polars as pl
from PIL import Image

from mtcxr.summary.figures import clinical_precision_figure, finding_precision_figure, recall_figure, tsne_sample
from mtcxr.tables import CONTRACTS, write_table

from tiny_tree import protocol_metrics


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
    assert "The test queries hold only one class" in notes_of(out)


# --- evaluate.protocols without mtcxr: each figure draws what the other protocols provide, or says why not --

NOT_COMPUTED = "not computed. evaluate.protocols does not include mtcxr; add it to draw this."


def write_summary(tmp_path, protocols: list[str], precision_k: int = 5) -> str:
    path = tmp_path / "summary.parquet"
    write_table(protocol_metrics(protocols, precision_k=precision_k), "metrics", path)
    return str(path)


def notes_of(png) -> str:
    """The notes a figure drew in place of missing panels (figures._save writes them into the PNG)."""
    return Image.open(png).info.get("Description", "")


def bar_pixels(png, colour: str, box: tuple[float, float, float, float]) -> int:
    """How many pixels of `colour` (hex) lie in `box` (left, top, right, bottom as fractions of the image)."""
    image = np.asarray(Image.open(png).convert("RGB")).astype(int)
    h, w, _ = image.shape
    part = image[int(box[1] * h) : int(box[3] * h), int(box[0] * w) : int(box[2] * w)]
    rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(part - rgb).sum(axis=2) < 12).sum())


def test_recall_figure_without_mtcxr_draws_cxr_clip_recall_and_a_note_for_t2i(tmp_path):
    summary = write_summary(tmp_path, ["cxr_clip", "label_5x200"])
    out = tmp_path / "recall.png"
    recall_figure(summary, str(out))
    assert notes_of(out) == f"demo: report → image Recall@K: {NOT_COMPUTED}"
    # The left panel holds CXR-CLIP's bars (zeroshot in C0, multitask in C1); the right one none.
    assert bar_pixels(out, "#1f77b4", (0, 0, 0.5, 1)) > 500 and bar_pixels(out, "#ff7f0e", (0, 0, 0.5, 1)) > 500
    assert bar_pixels(out, "#1f77b4", (0.5, 0, 1, 1)) == 0


def test_recall_figure_with_only_5x200_says_so_in_both_panels(tmp_path):
    out = tmp_path / "recall.png"
    recall_figure(write_summary(tmp_path, ["label_5x200"]), str(out))
    assert notes_of(out).splitlines() == [
        "demo: image → report Recall@K: not computed. evaluate.protocols includes none of mtcxr, cxr_clip; "
        "add one to draw this.",
        f"demo: report → image Recall@K: {NOT_COMPUTED}",
    ]
    assert bar_pixels(out, "#1f77b4", (0, 0, 1, 1)) == 0


def test_recall_figure_with_mtcxr_draws_i2t_and_t2i_without_notes(tmp_path):
    out = tmp_path / "recall.png"
    recall_figure(write_summary(tmp_path, ["mtcxr", "cxr_clip"]), str(out))
    assert notes_of(out) == ""
    assert bar_pixels(out, "#1f77b4", (0, 0, 0.5, 1)) > 500 and bar_pixels(out, "#1f77b4", (0.5, 0, 1, 1)) > 500


def test_clinical_precision_without_mtcxr_says_not_computed(tmp_path):
    out = tmp_path / "clinical.png"
    clinical_precision_figure(write_summary(tmp_path, ["cxr_clip", "label_5x200"]), "demo", 5, str(out))
    assert notes_of(out) == f"demo: clinical Precision@5: {NOT_COMPUTED}"


def test_clinical_precision_at_another_k_names_the_k_it_has(tmp_path):
    out = tmp_path / "clinical.png"
    clinical_precision_figure(write_summary(tmp_path, ["mtcxr"], precision_k=5), "demo", 10, str(out))
    assert notes_of(out) == (
        "demo: no Precision@10 rows; summary.parquet holds Precision@5 (evaluated with another evaluate.precision_k)."
    )


def test_finding_figure_without_mtcxr_says_not_computed(tmp_path):
    """No finding_precision rows: without mtcxr they were not computed; with it, no test image had a finding."""
    empty = pl.DataFrame(schema=CONTRACTS["finding_precision"])
    out = tmp_path / "findings.png"
    summary = protocol_metrics(["cxr_clip", "label_5x200"])
    finding_precision_figure(empty, "demo", str(out), summary)
    assert notes_of(out) == f"demo: clinical precision by query finding: {NOT_COMPUTED}"
    finding_precision_figure(empty, "demo", str(out), protocol_metrics(["mtcxr"]))
    assert notes_of(out) == "demo: clinical precision by query finding: no test image has a positive finding."
    # A backbone without any metric row (an empty test gallery) is not blamed on the config.
    finding_precision_figure(empty, "other", str(out), summary)
    assert notes_of(out) == (
        "other: clinical precision by query finding: no metrics for backbone other (its test gallery is empty; "
        "see logs/evaluate)."
    )


def test_tsne_draws_a_seeded_sample_and_says_so():
    chosen, caption = tsne_sample(5000, 3000, seed=0)
    assert len(chosen) == 3000 and len(set(chosen.tolist())) == 3000 and (np.diff(chosen) > 0).all()
    assert chosen.max() < 5000 and caption == " (a random sample of 3,000 of 5,000 per panel)"
    np.testing.assert_array_equal(tsne_sample(5000, 3000, seed=0)[0], chosen)
    assert not np.array_equal(tsne_sample(5000, 3000, seed=1)[0], chosen)
    assert tsne_sample(3000, 3000, seed=0) == (None, "")
