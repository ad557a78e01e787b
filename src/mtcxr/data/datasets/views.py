"""Radiograph views: the spellings real collections write, mapped onto mtcxr's five (tables.VIEWS).

Collections name views their own way: DICOM's ViewPosition codes (PA, AP, LL, RL), position
qualifiers ("AP Supine", "PA erect", "AP semi erect", "AP portable"), abbreviations ("LAT",
"L") and words ("posteroanterior"). A spelling is matched after upper-casing, turning `_`,
`-` and `/` into spaces, collapsing spaces and dropping a trailing "VIEW" and a leading or
trailing "CHEST". A position qualifier does not change the projection, so it is dropped:
"AP Supine" is AP. Anything else (CT planes such as "Axial" or "Coronal", decubitus and
oblique views) is unknown: the manifest reader rejects the image with the value it found.
"""

from __future__ import annotations

import polars as pl

_PA = ("PA", "POSTEROANTERIOR", "POSTERO ANTERIOR", "POSTERIOR ANTERIOR", "FRONTAL PA")
_AP = ("AP", "ANTEROPOSTERIOR", "ANTERO POSTERIOR", "ANTERIOR POSTERIOR", "FRONTAL AP")
_POSITIONS = (
    "",
    " ERECT",
    " UPRIGHT",
    " STANDING",
    " SITTING",
    " SUPINE",
    " SEMI ERECT",
    " SEMIERECT",
    " SEMI UPRIGHT",
    " PORTABLE",
    " PORTABLE SUPINE",
    " PORTABLE ERECT",
    " PORTABLE UPRIGHT",
)

SPELLINGS: dict[str, str] = {
    **{name + position: "PA" for name in _PA for position in _POSITIONS},
    **{name + position: "AP" for name in _AP for position in _POSITIONS},
    **{f"PORTABLE {name}": "AP" for name in _AP},
    **{f"SUPINE {name}": "AP" for name in _AP},
    **dict.fromkeys(
        (
            "LATERAL",
            "LAT",
            "L",
            "RL",
            "RIGHT LATERAL",
            "R LATERAL",
            "XTABLE LATERAL",
            "X TABLE LATERAL",
            "CROSS TABLE LATERAL",
            "CROSSTABLE LATERAL",
            "LATERAL ERECT",
            "LATERAL UPRIGHT",
            "LATERAL SUPINE",
        ),
        "LATERAL",
    ),
    **dict.fromkeys(("LL", "LEFT LATERAL", "L LATERAL"), "LL"),
    **dict.fromkeys(("UNKNOWN", "UNK", "N A", "NA", "NONE"), "UNKNOWN"),
}


def view_key(column: pl.Expr) -> pl.Expr:
    """The spelling key of a view column: upper case, separators as single spaces, "VIEW" and "CHEST" dropped."""
    key = column.cast(pl.String).str.to_uppercase().str.replace_all(r"[_\-/.]+", " ")
    key = key.str.replace_all(r"\s+", " ").str.strip_chars()
    key = key.str.replace(r"\s*\bVIEW$", "").str.replace(r"^CHEST\s+", "").str.replace(r"\s+CHEST$", "")
    return key.str.strip_chars()


def canonical_view(column: pl.Expr, blank: str = "UNKNOWN", unknown: str | None = None) -> pl.Expr:
    """Map a column of view spellings onto tables.VIEWS: `blank` for blank or null, `unknown` for spellings not known."""
    key = view_key(column)
    return (
        pl.when(key.is_null() | (key.str.len_chars() == 0))
        .then(pl.lit(blank))
        .otherwise(key.replace_strict(SPELLINGS, default=unknown, return_dtype=pl.String))
    )
