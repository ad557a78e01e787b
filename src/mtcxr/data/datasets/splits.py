"""Patient-level train/validate/test splits and the check that no patient crosses splits."""

from __future__ import annotations

import hashlib

import polars as pl

from mtcxr.errors import InputError

DEFAULT_FRACTIONS = {"train": 0.7, "validate": 0.1, "test": 0.2}


class SplitLeakError(InputError, ValueError):
    """A patient appears in more than one split."""


def assign_patient_splits(
    patient_ids: list[str] | pl.Series, fractions: dict[str, float] | None = None, seed: int = 0
) -> dict[str, str]:
    """Map each patient id to a split, seeded and independent of row order.

    Each patient is placed by a hash of (seed, patient_id), so adding patients
    never moves existing ones to another split.
    """
    fractions = fractions or DEFAULT_FRACTIONS
    total = sum(fractions.values())
    bounds, running = [], 0.0
    for split, fraction in fractions.items():
        running += fraction / total
        bounds.append((running, split))
    assignment = {}
    for patient_id in sorted(set(patient_ids)):
        digest = hashlib.blake2b(f"{seed}:{patient_id}".encode(), digest_size=8).digest()
        position = int.from_bytes(digest, "big") / 2**64
        assignment[patient_id] = next((split for bound, split in bounds if position < bound), bounds[-1][1])
    return assignment


def check_split_hygiene(table: pl.DataFrame, source: str = "studies") -> None:
    """Raise SplitLeakError naming the patients that appear in more than one split."""
    leaking = (
        table.group_by("patient_id")
        .agg(pl.col("split").unique().sort().alias("splits"))
        .filter(pl.col("splits").list.len() > 1)
        .sort("patient_id")
    )
    if leaking.height:
        shown = ", ".join(
            f"{row['patient_id']} ({'/'.join(row['splits'])})" for row in leaking.head(10).iter_rows(named=True)
        )
        more = f" and {leaking.height - 10} more" if leaking.height > 10 else ""
        raise SplitLeakError(
            f"{leaking.height} patient(s) in {source} appear in more than one split: {shown}{more}. "
            "Give each patient a single split in the dataset's split column, or drop the column to let "
            "mtcxr assign a seeded patient-level split."
        )
