"""F1 of mtcxr's report labeler and of the CheXpert labeler against human gold labels (IU X-ray).

Data (--data DIR, required): a folder holding the IU X-ray Kaggle layout's `indiana_reports.csv`
(uid, findings, impression; 3,080 real reports in the subset measured), NegBio's Open-I gold
standard for the same reports (`gold_labels.csv`: uid, ChestX-ray14 classes + `normal`, 0/1) and
the CheXpert labeler's output on them (`chexpert_labeler_output.csv`: uid, `text` = the text it was
given (findings, or impression where findings is empty), and its 14 observation columns).

Scored over the 8 classes the two label sets share; a label counts as positive when it is 1 or -1
(uncertain read as positive, the setting of docs/methods.md, Report labels), and the CheXpert labeler's
scores with uncertain read as negative are printed too. mtcxr's labeler is run twice: on the very text the
CheXpert labeler saw, and on the full report (findings + impression).

Usage: .venv/bin/python benchmarks/labeler_gold.py --data DIR [--errors CLASS]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import polars as pl

from mtcxr.labels.extract import label_reports

# gold column -> CheXpert observation (snake_case), in the order of the printed table.
SHARED_CLASSES = {
    "Atelectasis": "atelectasis",
    "Cardiomegaly": "cardiomegaly",
    "Effusion": "pleural_effusion",
    "Pneumonia": "pneumonia",
    "Pneumothorax": "pneumothorax",
    "Consolidation": "consolidation",
    "Edema": "edema",
    "normal": "no_finding",
}
CHEXPERT_DISPLAY_COLUMNS = {
    "atelectasis": "Atelectasis",
    "cardiomegaly": "Cardiomegaly",
    "pleural_effusion": "Pleural Effusion",
    "pneumonia": "Pneumonia",
    "pneumothorax": "Pneumothorax",
    "consolidation": "Consolidation",
    "edema": "Edema",
    "no_finding": "No Finding",
}


def full_report(findings: pl.Expr, impression: pl.Expr) -> pl.Expr:
    """Findings and impression as one text, a paragraph break between them (a sentence boundary)."""
    return pl.concat_str([findings.fill_null(""), impression.fill_null("")], separator="\n\n").str.strip_chars()


def load(data: Path) -> pl.DataFrame:
    """One row per report: uid, gold labels, the CheXpert labeler's text and labels, the full report."""
    reports = pl.read_csv(data / "indiana_reports.csv", infer_schema=False)
    gold = pl.read_csv(data / "gold_labels.csv", infer_schema=False)
    chexpert = pl.read_csv(data / "chexpert_labeler_output.csv", infer_schema=False)
    chexpert = chexpert.select(
        "uid",
        "text",
        *[
            pl.col(display).cast(pl.Float64).cast(pl.Int8).alias(f"chexpert_{name}")
            for name, display in CHEXPERT_DISPLAY_COLUMNS.items()
        ],
    )
    gold = gold.select(
        "uid", *[pl.col(column).cast(pl.Int8).alias(f"gold_{name}") for column, name in SHARED_CLASSES.items()]
    )
    reports = reports.select("uid", full=full_report(pl.col("findings"), pl.col("impression")))
    return gold.join(chexpert, on="uid").join(reports, on="uid")


def f1(gold: pl.Series, predicted: pl.Series, uncertain_positive: bool = True) -> float:
    """F1 of predicted CheXpert values (1, 0, -1, null) against binary gold labels."""
    positive = [1, -1] if uncertain_positive else [1]
    truth = gold == 1
    guess = predicted.fill_null(0).is_in(positive)
    true_positive = (truth & guess).sum()
    false_positive = (~truth & guess).sum()
    false_negative = (truth & ~guess).sum()
    denominator = 2 * true_positive + false_positive + false_negative
    return 2 * true_positive / denominator if denominator else float("nan")


def score(data: Path, uncertain_positive: bool = True) -> pl.DataFrame:
    """Per-class and macro F1 table: rows = 8 classes + macro, columns = labeler × text.

    The CheXpert labeler's output exists only for the text it saw, so it has no full-report column.
    """
    frame = load(data)
    same = label_reports(frame["text"].to_list())
    full = label_reports(frame["full"].to_list())
    rows = []
    for gold_column, name in SHARED_CLASSES.items():
        gold = frame[f"gold_{name}"]
        display = CHEXPERT_DISPLAY_COLUMNS[name]
        rows.append(
            {
                "class": gold_column if gold_column == display else f"{gold_column} / {display}",
                "gold_positive": int(gold.sum()),
                "chexpert_same_text": f1(gold, frame[f"chexpert_{name}"], uncertain_positive),
                "mtcxr_same_text": f1(gold, same[name], uncertain_positive),
                "mtcxr_full_report": f1(gold, full[name], uncertain_positive),
            }
        )
    table = pl.DataFrame(rows)
    macro = table.select(
        pl.lit("macro").alias("class"),
        pl.lit(None, pl.Int64).alias("gold_positive"),
        pl.exclude("class", "gold_positive").mean(),
    )
    return pl.concat([table, macro])


def errors(data: Path, name: str, text: str = "full", limit: int = 40) -> None:
    """Print reports where mtcxr's label for `name` disagrees with the gold (for reading, not fitting)."""
    frame = load(data)
    labels = label_reports(frame[text].to_list())
    frame = frame.with_columns(predicted=labels[name])
    wrong = frame.filter((pl.col(f"gold_{name}") == 1) != pl.col("predicted").fill_null(0).is_in([1, -1]))
    print(f"{wrong.height} disagreements on {name}")
    for row in wrong.head(limit).iter_rows(named=True):
        print(f"[gold {row[f'gold_{name}']} pred {row['predicted']}] uid {row['uid']}: {row[text]}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="IU X-ray folder with indiana_reports.csv, gold_labels.csv, chexpert_labeler_output.csv",
    )
    parser.add_argument("--errors", metavar="OBSERVATION", help="print disagreements for one observation")
    parser.add_argument("--limit", type=int, default=40)
    args = parser.parse_args(argv)
    missing = [
        name
        for name in ("indiana_reports.csv", "gold_labels.csv", "chexpert_labeler_output.csv")
        if not (args.data / name).is_file()
    ]
    if missing:
        print(
            f"{args.data}: missing {', '.join(missing)}; pass --data a folder holding the IU X-ray reports "
            "(Kaggle layout), NegBio's gold labels and the CheXpert labeler's output",
            file=sys.stderr,
        )
        return 2
    if args.errors:
        errors(args.data, args.errors, limit=args.limit)
        return 0
    print(f"{len(load(args.data)):,} reports, gold labels from {args.data}")
    with pl.Config(
        tbl_rows=20,
        tbl_cols=10,
        float_precision=3,
        tbl_width_chars=160,
        tbl_hide_dataframe_shape=True,
        tbl_formatting="MARKDOWN",
        tbl_hide_column_data_types=True,
    ):
        for uncertain_positive, title in (
            (True, "uncertain (-1) counted as positive"),
            (False, "uncertain (-1) counted as negative"),
        ):
            print(f"\nF1 against the gold labels, {title}:")
            print(score(args.data, uncertain_positive))
    return 0


if __name__ == "__main__":
    sys.exit(main())
