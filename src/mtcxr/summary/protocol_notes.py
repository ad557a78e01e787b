"""Which retrieval protocols a `metrics` table holds rows of, and what to show in place of one left out.

A library module rather than part of a stage: `summarize` (summary.md) and `figures` both say what
`evaluate.protocols` left out, and a stage module does not import another stage's. The tasks each
protocol writes come from the registry beside the protocols themselves (`protocols.PROTOCOL_TASKS`).
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from mtcxr.retrieval.protocols import PROTOCOL_TASKS

__all__ = ["PROTOCOL_TASKS", "missing_protocol_note", "protocols_evaluated"]


def protocols_evaluated(summary: pl.DataFrame, backbone: str) -> set[str] | None:
    """The retrieval protocols (`PROTOCOL_TASKS`) that have rows for `backbone` in a `metrics` table.

    None where the backbone has no retrieval or classification row at all (evaluate writes none for an
    empty test gallery): then a missing protocol says nothing about `evaluate.protocols`.
    """
    tasks = set(summary.filter(pl.col("backbone") == backbone)["task"].unique().to_list())
    evaluated = {name for name, own in PROTOCOL_TASKS.items() if tasks & set(own)}
    return evaluated if evaluated or "classification" in tasks else None


def missing_protocol_note(
    summary: pl.DataFrame,
    backbone: str,
    what: str,
    protocols: Sequence[str] = ("mtcxr",),
    verb: str = "draw this",
    markdown: bool = False,
) -> str | None:
    """What to show instead of `what` when `backbone` has rows of none of `protocols` (any one of them
    provides it); None where it has them."""
    evaluated = protocols_evaluated(summary, backbone)
    code = (lambda text: f"`{text}`") if markdown else (lambda text: text)  # noqa: E731
    if evaluated is None:
        return f"{what}: no metrics for backbone {code(backbone)} (its test gallery is empty; see logs/evaluate)."
    if evaluated & set(protocols):
        return None
    names = [code(name) for name in protocols]
    lacks = f"does not include {names[0]}" if len(names) == 1 else f"includes none of {', '.join(names)}"
    return f"{what}: not computed. {code('evaluate.protocols')} {lacks}; add {'it' if len(names) == 1 else 'one'} to {verb}."
