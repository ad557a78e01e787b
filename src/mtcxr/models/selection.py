"""Model selection for head training: keep the epoch with the best validation criterion, stop early.

`train.select: best` (the default) keeps the weights of the epoch whose validation criterion is
best; `last` keeps the final epoch. The criterion (`train.criterion`) is the validation loss of
the variant's own objective (`validate_loss`, lower is better) or the validation image->report
Recall@10 (`validate_recall`, higher is better). With `train.patience: P > 0`, training stops
once P epochs in a row have not improved on the best. Ties keep the earlier epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

SELECT = ("best", "last")
CRITERIA = {"validate_loss": "min", "validate_recall": "max"}


@dataclass
class EpochSelector:
    """Follows the criterion epoch by epoch: which epoch is best so far, and whether to stop."""

    select: str = "best"
    criterion: str = "validate_loss"
    patience: int = 0
    best_epoch: int | None = None
    best_value: float | None = None
    since_best: int = 0
    seen: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.select not in SELECT:
            raise ValueError(f"train.select is {self.select!r}; choose one of {list(SELECT)}")
        if self.criterion not in CRITERIA:
            raise ValueError(f"train.criterion is {self.criterion!r}; choose one of {list(CRITERIA)}")

    def update(self, epoch: int, value: float | None) -> bool:
        """Record the criterion of `epoch` (None/NaN: no validation data); return True if it is the new best.

        Under `last`, or without a usable value, every epoch is the new best (the last one wins).
        """
        usable = value is not None and not math.isnan(value)
        self.seen.append(value if usable else math.nan)
        if self.select == "last" or not usable:
            self.best_epoch, self.best_value, self.since_best = epoch, value if usable else None, 0
            return True
        better = self.best_value is None or (
            value < self.best_value if CRITERIA[self.criterion] == "min" else value > self.best_value
        )
        if better:
            self.best_epoch, self.best_value, self.since_best = epoch, value, 0
        else:
            self.since_best += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.select == "best" and self.patience > 0 and self.since_best >= self.patience
