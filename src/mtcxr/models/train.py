"""Stage `train_head`: train the projector heads of one variant from cached embeddings.

The `train:` settings travel as one `TrainSettings`, the files a head is trained from as one `HeadInputs`
and the files it is written to as one `HeadOutputs`.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import polars as pl
import torch
from tqdm import tqdm

from mtcxr.data.embedded_split import SplitEmbeddings, load_split
from mtcxr.models.backbone import choose_device
from mtcxr.models.heads import ProjectionHeads, save_heads
from mtcxr.models.losses import LOSS_NAMES, check_loss_names, composite_loss  # noqa: F401 (LOSS_NAMES: re-exported)
from mtcxr.models.selection import EpochSelector

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    """The `train:` settings of one head's training; the defaults are the config schema's."""

    epochs: int = 40
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    hidden_dim: int = 512
    supcon_temperature: float = 0.1
    select: str = "best"
    criterion: str = "validate_loss"
    patience: int = 10
    device: str = "auto"

    @classmethod
    def from_config(cls, section: Mapping) -> TrainSettings:
        """From the config's `train:` section, or the part of it a rule passes (an untrained variant's job
        gets `hidden_dim` alone); a key it lacks keeps its default, `seeds` (one job per seed) is not one."""
        names = {field.name for field in fields(cls)}
        return cls(**{key: value for key, value in section.items() if key in names})


# The settings written into a trained head's JSON config (not `device`: where it ran does not change it).
RECORDED_SETTINGS = (
    "epochs",
    "batch_size",
    "learning_rate",
    "weight_decay",
    "hidden_dim",
    "supcon_temperature",
    "select",
    "criterion",
    "patience",
)


@dataclass(frozen=True)
class HeadInputs:
    """The files one head is trained from: the backbone's cached embeddings and the tables that align
    them with studies, views, splits and labels (the `train_head` rule's inputs)."""

    image_embeddings: Sequence[str]
    text_embeddings: str
    images: str
    studies: str
    labels: str

    def split(self, split: str, frontal_only: bool = True) -> SplitEmbeddings:
        return load_split(
            list(self.image_embeddings),
            self.text_embeddings,
            self.images,
            self.studies,
            self.labels,
            split,
            frontal_only,
        )


@dataclass(frozen=True)
class HeadOutputs:
    """The files of one trained head: its weights, its JSON config and its per-epoch history."""

    weights: str
    config: str
    history: str


def fit_heads(
    train: SplitEmbeddings,
    validate: SplitEmbeddings | None,
    weights: dict[str, float],
    settings: TrainSettings | None = None,
    logit_scale: float = 100.0,
    seed: int = 0,
) -> tuple[ProjectionHeads, pl.DataFrame]:
    """Train heads on `train` with the given loss weights; return them and a per-epoch history.

    With `select: best` the returned heads are those of the epoch with the best validation
    `criterion` (mtcxr.models.selection), and training stops after `patience` epochs without improvement
    (0: never); the history's `chosen` column marks the kept epoch. `settings`: the schema's defaults
    where None.
    """
    settings = settings or TrainSettings()
    selector = EpochSelector(settings.select, settings.criterion, settings.patience)
    check_loss_names(weights)
    torch_device = choose_device(settings.device)
    log.info("training heads on %s: %d pairs, batch %d", torch_device, len(train.image_ids), settings.batch_size)
    heads = ProjectionHeads(train.image_vectors.shape[1], settings.hidden_dim, logit_scale, seed=seed).to(torch_device)
    abnormal_rate = float(train.image_abnormal.mean()) if len(train.image_ids) else 0.5
    # pos_weight = negatives / positives: the BCE treats both classes as equally frequent.
    pos_weight = (1 - abnormal_rate) / max(abnormal_rate, 1e-6)

    def tensors(split: SplitEmbeddings):
        return (
            torch.from_numpy(split.image_vectors).to(torch_device),
            torch.from_numpy(split.text_vectors[split.image_study]).to(torch_device),
            torch.from_numpy(split.image_abnormal).to(torch_device),
            torch.from_numpy(split.positive_labels[split.image_study]).to(torch_device),
        )

    image, text, abnormal, labels = tensors(train)
    optimizer = torch.optim.AdamW(heads.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    steps = settings.epochs * max(1, -(-len(image) // settings.batch_size))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    generator = torch.Generator().manual_seed(seed)
    history = []
    best_state = None
    for epoch in tqdm(range(settings.epochs), desc="train head", unit="epoch"):
        heads.train()
        order = torch.randperm(len(image), generator=generator).to(torch_device)
        sums: dict[str, torch.Tensor] = {}
        batches = 0
        for start in range(0, len(image), settings.batch_size):
            batch = order[start : start + settings.batch_size]
            if len(batch) < 2:
                continue  # contrastive losses need at least one negative
            terms = composite_loss(
                heads,
                image[batch],
                text[batch],
                abnormal[batch],
                weights,
                settings.supcon_temperature,
                pos_weight,
                labels[batch],
            )
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            optimizer.step()
            schedule.step()
            for name, value in terms.items():  # summed where they are: .item() would wait for the GPU each step
                sums[name] = sums.get(name, 0.0) + value.detach().double()
            batches += 1
        row = {"epoch": epoch, **{f"train_{k}": float(v) / max(batches, 1) for k, v in sums.items()}}
        if validate is not None and len(validate.image_ids) > 1:
            heads.eval()
            with torch.no_grad():
                v_image, v_text, v_abnormal, v_labels = tensors(validate)
                v_terms = composite_loss(
                    heads, v_image, v_text, v_abnormal, weights, settings.supcon_temperature, pos_weight, v_labels
                )
            row.update({f"validate_{k}": v.item() for k, v in v_terms.items()})
            row["validate_recall"] = validation_recall(heads, validate, torch_device)
        history.append(row)
        value = row.get("validate_total" if settings.criterion == "validate_loss" else "validate_recall")
        if selector.update(epoch, value):
            best_state = copy.deepcopy(heads.state_dict())
        if selector.should_stop:
            log.info(
                "early stop after epoch %d: %d epochs without a better %s",
                epoch,
                settings.patience,
                settings.criterion,
            )
            break
    heads.load_state_dict(best_state)
    heads.eval()
    table = pl.DataFrame(history).with_columns(chosen=pl.col("epoch") == selector.best_epoch)
    log.info(
        "kept epoch %d of %d (%s, %s %s)",
        selector.best_epoch,
        len(history),
        settings.select,
        settings.criterion,
        "n/a" if selector.best_value is None else f"{selector.best_value:.4f}",
    )
    return heads.cpu(), table


RECALL_K = 10


@torch.no_grad()
def validation_recall(heads: ProjectionHeads, split: SplitEmbeddings, device: torch.device) -> float:
    """Image->report Recall@10 on `split`: each image against the split's study reports, a hit its own."""
    images = heads.image(torch.from_numpy(split.image_vectors).to(device))
    reports = heads.text(torch.from_numpy(split.text_vectors).to(device))
    scores = images @ reports.T
    own = torch.from_numpy(split.image_study).to(device)
    own_score = scores.gather(1, own[:, None])
    ranks = (scores > own_score).sum(dim=1)
    return float((ranks < RECALL_K).float().mean())


def train_head(
    inputs: HeadInputs,
    outputs: HeadOutputs,
    variant: str,
    variant_cfg: dict,
    settings: TrainSettings,
    frontal_only: bool = True,
    seed: int = 0,
    threads: int = 1,
) -> None:
    """Train (or, for a variant with `train: false`, initialise as the identity) and save the heads."""
    torch.set_num_threads(max(1, threads))
    started = time.perf_counter()
    train = inputs.split("train", frontal_only)
    logit_scale = float(train.metadata.get("logit_scale", 100.0))
    weights = {name: float(w) for name, w in (variant_cfg.get("losses") or {}).items() if float(w) > 0}
    trained = bool(variant_cfg.get("train", True) and weights)
    # An untrained head's one setting is its width: the training settings did not shape it.
    recorded = {key: getattr(settings, key) for key in (RECORDED_SETTINGS if trained else ("hidden_dim",))}
    if trained:
        if len(train.image_ids) < 2:
            raise ValueError(
                f"train split has {len(train.image_ids)} usable image(s); at least 2 are needed to train {variant}"
            )
        log.info("training %s on %d train images, losses %s", variant, len(train.image_ids), weights)
        heads, history = fit_heads(
            train, inputs.split("validate", frontal_only), weights, settings, logit_scale=logit_scale, seed=seed
        )
    else:
        log.info("%s: no training; the untrained head is the identity (zero-shot backbone)", variant)
        heads = ProjectionHeads(train.image_vectors.shape[1], int(settings.hidden_dim), logit_scale, seed=seed)
        history = pl.DataFrame({"epoch": pl.Series([], dtype=pl.Int64), "chosen": pl.Series([], dtype=pl.Boolean)})
    Path(outputs.weights).parent.mkdir(parents=True, exist_ok=True)
    extra = {
        "variant": variant,
        "losses": weights,
        "trained": trained,
        "seed": int(seed),
        "train_images": int(len(train.image_ids)),
        "backbone": train.metadata.get("backbone"),
        "spec": train.metadata.get("spec"),
        "seconds": round(time.perf_counter() - started, 2),
        **recorded,
        "chosen_epoch": int(history.filter(pl.col("chosen"))["epoch"][0]) if history.height else None,
        "epochs_run": history.height,
    }
    save_heads(heads, outputs.weights, outputs.config, extra)
    history.write_parquet(outputs.history)
    log.info("%s heads written to %s", variant, outputs.weights)
