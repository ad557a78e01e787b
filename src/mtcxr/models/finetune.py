"""Stage `finetune_backbone`: train the last blocks of a backbone's towers together with projector heads
under a variant's losses, and write the result as an open_clip `local-dir:` backbone (README, Fine-tuning).

The last `image_blocks` residual blocks of the image tower and the last `text_layers` layers of the text
tower are unfrozen, with everything after them in their tower (final norm, pooling, projection); 0 and 0
leaves the encoders frozen and trains only the heads. The model stays in eval mode: batch-norm
statistics and dropout stay as pretrained, so a frozen block is bit-identical afterwards and a run is
deterministic. Backbone and heads have their own learning rates; a linear warm-up then a cosine
decay, AdamW weight decay, gradient-norm clipping; bf16 autocast and gradient checkpointing on CUDA.

Checkpoints (model, heads, optimizer, scheduler, RNG states, epoch and step) are written atomically
every `checkpoint_minutes` (0: after every step) under a folder that is not a rule output, so that a
job killed by a cluster's time limit resumes where it stopped when the workflow is run again, and ends
with the weights an uninterrupted run reaches. A checkpoint carries the fingerprint of everything that
decides the trained weights (`training_fingerprint`); one written under other settings, base weights or
training data is discarded with a warning naming what changed, and training starts again from step 0.

Any backbone spec can be the base: the result is written as a self-contained `local-dir:` folder
(`save_as_local_dir`), whatever the base was loaded from.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import math
import random
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import polars as pl
import torch
from PIL import Image
from tqdm import tqdm

from mtcxr.errors import InputError
from mtcxr.models.backbone import (
    HF_PREFIX,
    LOCAL_PREFIX,
    TEXT_TOWER_DIR,
    Backbone,
    autocast,
    choose_device,
    load_backbone,
    resolve_precision,
    resolve_spec,
    save_local_dir,
)
from mtcxr.models.heads import ProjectionHeads, save_heads
from mtcxr.models.losses import check_loss_names, composite_loss
from mtcxr.tables import CHEXPERT_LABELS, FRONTAL_VIEWS, read_table

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# Which parameters train
# --------------------------------------------------------------------------------------------------


class FinetuneError(InputError, ValueError):
    """A fine-tuning setting does not fit the base model; the message names the key and the fix."""


KNOWN_IMAGE_TOWERS = "timm ViT (BiomedCLIP), open_clip VisionTransformer, ModifiedResNet (the demo, RN50)"
KNOWN_TEXT_TOWERS = "open_clip text transformer, Hugging Face BERT-like (BiomedCLIP)"


def image_blocks(model: torch.nn.Module) -> tuple[list[torch.nn.Module], list[torch.nn.Module | torch.nn.Parameter]]:
    """(the image tower's residual blocks in order, what follows the last one: norm, pooling, projection)."""
    visual = model.visual
    if hasattr(visual, "trunk") and hasattr(visual.trunk, "blocks"):  # timm ViT (BiomedCLIP's ViT-B/16)
        after = [getattr(visual.trunk, name) for name in ("norm", "fc_norm", "head") if hasattr(visual.trunk, name)]
        return list(visual.trunk.blocks), after + [visual.head]
    if hasattr(visual, "transformer"):  # open_clip VisionTransformer
        return list(visual.transformer.resblocks), [visual.ln_post, visual.proj]
    if hasattr(visual, "layer4"):  # open_clip ModifiedResNet (the demo backbone, RN50)
        blocks = [block for name in ("layer1", "layer2", "layer3", "layer4") for block in getattr(visual, name)]
        return blocks, [visual.attnpool]
    kind = type(getattr(visual, "trunk", visual)).__name__
    raise FinetuneError(
        f"finetune: the image tower is a {kind}, whose blocks mtcxr.models.finetune does not know (it knows "
        f"{KNOWN_IMAGE_TOWERS}); set image_blocks: 0 for this backbone to train the text tower and heads only."
    )


def text_layers(model: torch.nn.Module) -> tuple[list[torch.nn.Module], list[torch.nn.Module | torch.nn.Parameter]]:
    """(the text tower's layers in order, what follows the last one)."""
    text = getattr(model, "text", None)
    if text is not None and hasattr(getattr(text, "transformer", None), "encoder"):  # HF (BiomedCLIP's BERT)
        after = [text.proj] + ([text.pooler] if isinstance(text.pooler, torch.nn.Module) else [])
        return list(text.transformer.encoder.layer), after
    # open_clip's text transformer: CLIP's own attributes, or a CustomTextCLIP's (SigLIP, CoCa) `text` module
    tower = text if text is not None and hasattr(text, "transformer") else model
    if hasattr(tower, "transformer") and hasattr(tower.transformer, "resblocks"):
        after = [tower.ln_final, tower.text_projection]
        return list(tower.transformer.resblocks), [part for part in after if part is not None]
    raise FinetuneError(
        f"finetune: the text tower of this {type(model).__name__} is one whose layers mtcxr.models.finetune does not "
        f"know (it knows {KNOWN_TEXT_TOWERS}); set text_layers: 0 for this backbone to train the image tower "
        "and heads only."
    )


def _parameters(parts: list) -> list[torch.nn.Parameter]:
    found = []
    for part in parts:
        found += [part] if isinstance(part, torch.nn.Parameter) else list(part.parameters())
    return found


def unfreeze(model: torch.nn.Module, n_image: int, n_text: int, where: str = "finetune") -> list[torch.nn.Parameter]:
    """Freeze `model`, then unfreeze its last `n_image` image blocks and `n_text` text layers with what
    follows them; return the trainable parameters (none when both are 0).

    `where` is the config key of the entry, named in the error for a count above the tower's depth.
    """
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    trainable: list[torch.nn.Parameter] = []
    for n, towers, key, tower in (
        (n_image, image_blocks, "image_blocks", "image"),
        (n_text, text_layers, "text_layers", "text"),
    ):
        if not n:
            continue  # a tower left frozen need not be one whose blocks are known
        blocks, after = towers(model)
        if n > len(blocks):
            raise FinetuneError(
                f"{where}.{key} is {n}, but the {tower} tower has {len(blocks)} blocks; set it to at most "
                f"{len(blocks)} (the last ones train; 0 leaves the tower frozen)."
            )
        trainable += _parameters(blocks[-n:] + after)
    unique = list({id(p): p for p in trainable}.values())
    for parameter in unique:
        parameter.requires_grad_(True)
    return unique


# --------------------------------------------------------------------------------------------------
# Data: the cached pixels of the train split with their reports and labels
# --------------------------------------------------------------------------------------------------


@dataclass
class TrainingPairs:
    image_ids: list[str]
    pngs: list[bytes]
    reports: list[str]
    abnormal: np.ndarray  # (N,) bool
    labels: np.ndarray  # (N, 14) bool: label == 1


def training_pairs(
    pixel_shards: list[str], studies_path: str, labels_path: str, split: str = "train", frontal_only: bool = True
) -> TrainingPairs:
    """Every cached image of `split` (frontal ones by default) with its study's report and labels, by image_id."""
    studies = read_table(studies_path, "studies").filter(pl.col("split") == split).select("study_id", "report")
    labels = read_table(labels_path, "labels")
    pixels = pl.concat([pl.read_parquet(path) for path in pixel_shards]).filter(pl.col("split") == split)
    if frontal_only:
        pixels = pixels.filter(pl.col("view").is_in(FRONTAL_VIEWS))
    table = pixels.join(studies, on="study_id", how="inner").join(labels, on="study_id", how="inner").sort("image_id")
    if table.height < 2:
        raise ValueError(f"finetune: the {split} split has {table.height} usable image(s); at least 2 are needed")
    return TrainingPairs(
        image_ids=table["image_id"].to_list(),
        pngs=table["png"].to_list(),
        reports=table["report"].to_list(),
        abnormal=table["abnormal"].to_numpy().astype(bool),
        labels=np.stack([(table[name].fill_null(0) == 1).to_numpy() for name in CHEXPERT_LABELS], axis=1),
    )


@dataclass(frozen=True)
class FinetuneInputs:
    """The files a backbone is fine-tuned on: the cached pixel shards, the studies table (reports and
    splits) and the labels table (the `finetune_backbone` rule's inputs)."""

    pixel_shards: Sequence[str]
    studies: str
    labels: str

    def pairs(self, split: str = "train", frontal_only: bool = True) -> TrainingPairs:
        return training_pairs(list(self.pixel_shards), self.studies, self.labels, split, frontal_only)


def _pixels(pngs: list[bytes], preprocess) -> torch.Tensor:
    return torch.stack([preprocess(Image.open(io.BytesIO(png)).convert("RGB")) for png in pngs])


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------


def _rng_state() -> dict:
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, **state) -> None:
    """Write the checkpoint to a temporary file, then rename it: a kill mid-write leaves the last one whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    partial.replace(path)


def load_checkpoint(path: Path) -> dict | None:
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)  # our own file: RNG states are not tensors


@dataclass(frozen=True)
class FinetuneSettings:
    """The settings of one fine-tuning run; the defaults are the config schema's.

    The config's `finetune:` block with the entry's own keys over it, and the heads' `hidden_dim` and
    `supcon_temperature` from `train:` (the heads trained with the backbone are those of the variant).
    """

    image_blocks: int = 1
    text_layers: int = 0
    epochs: int = 2
    batch_size: int = 64
    backbone_lr: float = 1e-5
    head_lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    checkpoint_minutes: float = 30
    device: str = "auto"
    precision: str = "auto"  # backbone.PRECISIONS: auto is bf16 autocast on CUDA, float32 on the CPU
    grad_checkpointing: str | bool = "auto"  # recompute activations in backward; auto: on CUDA only
    hidden_dim: int = 512
    supcon_temperature: float = 0.1

    @classmethod
    def from_config(cls, finetune: Mapping, train: Mapping | None = None) -> FinetuneSettings:
        """From the `finetune:` settings (the shared block with an entry's keys over it, as the rule's
        `settings` param holds them: `backbones` and the entry's `base`, `variant`, `variants` are not
        settings of the run) and the `train:` section's `hidden_dim` and `supcon_temperature`; a key
        neither gives keeps its default."""
        names = {field.name for field in fields(cls)}
        given = {key: value for key, value in finetune.items() if key in names}
        given.update({key: (train or {})[key] for key in ("hidden_dim", "supcon_temperature") if key in (train or {})})
        return cls(**given)


# The settings that decide the trained weights. Not `checkpoint_minutes` (when a checkpoint is written)
# nor `device`: a job resubmitted elsewhere continues the same training.
TRAINING_SETTINGS = (
    "image_blocks",
    "text_layers",
    "epochs",
    "batch_size",
    "backbone_lr",
    "head_lr",
    "warmup_steps",
    "weight_decay",
    "grad_clip",
)


def weights_digest(model: torch.nn.Module) -> str:
    """A digest of every tensor of the model's state (names, dtypes, shapes, bytes)."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def data_digest(pairs: TrainingPairs) -> str:
    """A digest of the training pairs: image ids, cached pixels, reports and labels, in training order."""
    digest = hashlib.blake2b(digest_size=16)
    for image_id, png, report in zip(pairs.image_ids, pairs.pngs, pairs.reports, strict=True):
        for part in (image_id.encode(), png, report.encode()):
            digest.update(len(part).to_bytes(8, "little"))
            digest.update(part)
    digest.update(np.ascontiguousarray(pairs.abnormal).tobytes())
    digest.update(np.ascontiguousarray(pairs.labels).tobytes())
    return digest.hexdigest()


def training_fingerprint(
    base_spec: str,
    base_weights: str,
    losses: dict[str, float],
    settings: FinetuneSettings,
    frontal_only: bool,
    seed: int,
    pairs: TrainingPairs,
) -> dict:
    """Everything that decides the weights a run trains to; a checkpoint is resumed only under an equal one."""
    return {
        "base": base_spec,
        "base_weights": base_weights,
        "variant_losses": {name: float(weight) for name, weight in sorted(losses.items())},
        **{key: _number(getattr(settings, key)) for key in TRAINING_SETTINGS},
        "hidden_dim": int(settings.hidden_dim),
        "supcon_temperature": float(settings.supcon_temperature),
        "frontal_only": bool(frontal_only),
        "seed": int(seed),
        "train_images": len(pairs.image_ids),
        "train_data": data_digest(pairs),
    }


def _number(value) -> int | float:
    # 1 and 1.0 are one setting: YAML and --config give either
    return int(value) if float(value).is_integer() else float(value)


def fingerprint_changes(old: dict, new: dict) -> list[str]:
    """`key: old -> new` for each setting that differs (digests as `changed`)."""
    changes = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key, "unset"), new.get(key, "unset")
        if before != after:
            digest = key in ("base_weights", "train_data")
            changes.append(f"{key}: changed" if digest else f"{key}: {before} -> {after}")
    return changes


def resumable(state: dict | None, fingerprint: dict, path: Path) -> bool:
    """Whether the checkpoint `state` continues this run; a stale one is deleted with a warning saying why."""
    if state is None:
        return False
    if "fingerprint" not in state:
        reason = "it records no settings (an older mtcxr wrote it), so it cannot be told to match this config"
    else:
        changes = fingerprint_changes(state["fingerprint"], fingerprint)
        if not changes:
            return True
        reason = "it was written under other settings (" + "; ".join(changes) + ")"
    log.warning(
        "discarding the fine-tuning checkpoint %s, stopped at step %s: %s. Training starts again from step 0.",
        path,
        state.get("step", "?"),
        reason,
    )
    path.unlink(missing_ok=True)
    return False


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def schedule(warmup_steps: int, total_steps: int):
    """LambdaLR factor: linear warm-up over `warmup_steps`, then cosine decay to 0 at `total_steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def use_grad_checkpointing(device: torch.device, setting: str | bool = "auto") -> bool:
    """Whether to recompute activations in backward: `auto` on CUDA, where memory bounds the batch."""
    if setting == "auto":
        return device.type == "cuda"
    if isinstance(setting, bool):
        return setting
    raise ValueError(f"finetune.grad_checkpointing must be auto, true or false, not {setting!r}")


def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    # A generator per epoch: the order of any epoch is known without replaying the earlier ones.
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def finetune_backbone(
    base_spec: str,
    inputs: FinetuneInputs,
    output_dir: str,
    checkpoint_path: str,
    variant_cfg: dict,
    settings: FinetuneSettings,
    demo_dir: str | None = None,
    frontal_only: bool = True,
    seed: int = 0,
    threads: int = 1,
) -> dict:
    """Fine-tune `base_spec` on the train split under the variant's losses; write the local-dir folder.

    Errors name the entry by the output folder's name, its name in `finetune.backbones` as the workflow
    lays it out. Returns the run's facts (also written to `finetune.json`).
    """
    torch.set_num_threads(max(1, threads))
    weights = {name: float(w) for name, w in (variant_cfg.get("losses") or {}).items() if float(w) > 0}
    check_loss_names(weights)
    if not weights:
        raise ValueError("finetune: the variant has no loss with a positive weight to train with")
    device = choose_device(settings.device)
    backbone = load_backbone(base_spec, device=str(device), demo_dir=demo_dir, precision=settings.precision)
    model = backbone.model
    base_weights = weights_digest(model)
    where = f"finetune.backbones.{Path(output_dir).name}"
    trainable = unfreeze(model, int(settings.image_blocks), int(settings.text_layers), where)
    checkpointing = use_grad_checkpointing(device, settings.grad_checkpointing) and hasattr(
        model, "set_grad_checkpointing"
    )
    if checkpointing:
        with warnings.catch_warnings():  # open_clip's HF text tower calls a transformers name deprecated for v6
            warnings.filterwarnings("ignore", message=".*gradient_checkpointing_enable.*", category=FutureWarning)
            model.set_grad_checkpointing(True)  # activations recomputed in backward: larger batches fit
    torch.manual_seed(seed)
    heads = ProjectionHeads(backbone.embed_dim, settings.hidden_dim, backbone.logit_scale, seed=seed).to(device)
    pairs = inputs.pairs(frontal_only=frontal_only)
    n, batch_size, epochs = len(pairs.reports), int(settings.batch_size), int(settings.epochs)
    steps_per_epoch = max(1, n // batch_size)  # whole batches: contrastive losses want full ones
    total_steps = steps_per_epoch * epochs
    groups = [{"params": list(heads.parameters()), "lr": float(settings.head_lr)}]
    if trainable:
        groups.append({"params": trainable, "lr": float(settings.backbone_lr)})
    optimizer = torch.optim.AdamW(groups, weight_decay=float(settings.weight_decay))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule(int(settings.warmup_steps), total_steps))
    positives = max(1, int(pairs.abnormal.sum()))
    pos_weight = float((n - pairs.abnormal.sum()) / positives)

    fingerprint = training_fingerprint(base_spec, base_weights, weights, settings, frontal_only, seed, pairs)
    checkpoint = Path(checkpoint_path)
    state = load_checkpoint(checkpoint)
    step, history = 0, []
    if resumable(state, fingerprint, checkpoint):
        model.load_state_dict(state["model"])
        heads.load_state_dict(state["heads"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        step, history = int(state["step"]), list(state["history"])
        log.info("resuming from %s at step %d of %d (same settings, base and data)", checkpoint, step, total_steps)
    every = float(settings.checkpoint_minutes) * 60
    last_saved, started, first_step = time.monotonic(), time.perf_counter(), step
    model.eval()  # see the module docstring: frozen statistics, no dropout, bit-identical frozen blocks
    forward_precision = autocast(device, settings.precision)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trained_images = 0
    with tqdm(total=total_steps, initial=step, desc="finetune", unit="step") as progress:
        while step < total_steps:
            step_started = time.perf_counter()
            epoch, position = divmod(step, steps_per_epoch)
            batch = _epoch_order(n, seed, epoch)[position * batch_size : (position + 1) * batch_size].numpy()
            pixels = _pixels([pairs.pngs[i] for i in batch], backbone.preprocess).to(device)
            tokens = backbone.tokenizer([pairs.reports[i] for i in batch]).to(device)
            with forward_precision:
                image = torch.nn.functional.normalize(model.encode_image(pixels).float(), dim=-1)
                text = torch.nn.functional.normalize(model.encode_text(tokens).float(), dim=-1)
                terms = composite_loss(
                    heads,
                    image,
                    text,
                    torch.from_numpy(pairs.abnormal[batch]).to(device),
                    weights,
                    settings.supcon_temperature,
                    pos_weight,
                    torch.from_numpy(pairs.labels[batch]).to(device),
                )
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            torch.nn.utils.clip_grad_norm_(list(heads.parameters()) + trainable, float(settings.grad_clip))
            optimizer.step()
            scheduler.step()
            step += 1
            if step == first_step + 1:  # the rate leaves out the first step's one-off allocations
                started = time.perf_counter()
            else:
                trained_images += len(batch)
            history.append(
                {
                    "step": step,
                    "epoch": epoch,
                    "seconds": time.perf_counter() - step_started,
                    **{k: float(v.detach()) for k, v in terms.items()},
                }
            )
            progress.update(1)
            progress.set_postfix(epoch=epoch, loss=f"{history[-1]['total']:.3f}")
            if step < total_steps and time.monotonic() - last_saved >= every:
                save_checkpoint(
                    checkpoint,
                    model=model.state_dict(),
                    heads=heads.state_dict(),
                    optimizer=optimizer.state_dict(),
                    scheduler=scheduler.state_dict(),
                    rng=_rng_state(),
                    step=step,
                    history=history,
                    fingerprint=fingerprint,
                )
                last_saved = time.monotonic()
    seconds = time.perf_counter() - started
    # From the run itself (the history holds every step, resumed ones included): what was trained.
    facts = {
        "base": base_spec,
        "variant_losses": weights,
        "image_blocks": int(settings.image_blocks),
        "text_layers": int(settings.text_layers),
        "trainable_parameters": int(sum(p.numel() for p in trainable)),
        "train_images": n,
        "batch_size": batch_size,
        "steps": len(history),
        "epochs": history[-1]["epoch"] + 1 if history else 0,
        "resumed_at_step": first_step,
        "seed": seed,
        "device": str(device),
        "precision": resolve_precision(device, settings.precision),
        "grad_checkpointing": bool(checkpointing),
        "images_per_second": round(trained_images / seconds, 2) if seconds else None,
        "peak_gpu_memory_gib": (
            round(torch.cuda.max_memory_allocated(device) / 2**30, 3) if device.type == "cuda" else None
        ),
    }
    write_finetuned(backbone, demo_dir, Path(output_dir), heads, facts, history)
    checkpoint.unlink(missing_ok=True)
    log.info(
        "fine-tuned %s: %d trainable parameters, %d steps, %.1f images/s on %s",
        base_spec,
        facts["trainable_parameters"],
        total_steps,
        facts["images_per_second"] or 0,
        device,
    )
    return facts


def base_model_config(name: str) -> dict:
    """The open_clip `model_cfg` a resolved spec builds its model from (local-dir, hf-hub or a named model)."""
    import open_clip

    if name.startswith((LOCAL_PREFIX, HF_PREFIX)):
        model_cfg = open_clip.get_model_config(name)  # the folder's or the (cached) hub repo's open_clip_config.json
    else:
        model_cfg = open_clip.get_model_config(name.partition(":")[0].replace("/", "-"))  # as create_model looks it up
    if model_cfg is None:
        raise ValueError(f"finetune: open_clip has no model config for {name!r}")
    return copy.deepcopy(model_cfg)


def save_as_local_dir(backbone: Backbone, name: str, folder: Path) -> Path:
    """Write a loaded backbone as a self-contained `local-dir:` folder that `load_backbone` loads anywhere.

    `name` is its resolved spec (`resolve_spec`): any kind. The folder holds open_clip_config.json (the
    base's model_cfg and the preprocessing the model was built with), the weights as safetensors, and for
    a Hugging Face text tower its config (in `text/`, named by `hf_model_name`) and tokenizer files, so
    that nothing is fetched from the hub or its cache to load it again.
    """
    import open_clip

    model_cfg = base_model_config(name)
    preprocess_cfg = copy.deepcopy(open_clip.get_model_preprocess_cfg(backbone.model))
    text_cfg = model_cfg.setdefault("text_cfg", {})
    folder.mkdir(parents=True, exist_ok=True)
    if text_cfg.get("hf_model_name"):
        backbone.model.text.config.save_pretrained(folder / TEXT_TOWER_DIR)
        backbone.tokenizer.tokenizer.save_pretrained(folder / TEXT_TOWER_DIR)
        text_cfg.update(hf_model_name=TEXT_TOWER_DIR, hf_tokenizer_name=TEXT_TOWER_DIR)
        text_cfg.pop("hf_model_pretrained", None)
    if text_cfg.get("hf_tokenizer_name"):
        backbone.tokenizer.tokenizer.save_pretrained(folder)  # open_clip reads a local-dir's tokenizer here
    return save_local_dir(backbone.model.float().cpu(), model_cfg, preprocess_cfg, folder)


def write_finetuned(
    backbone: Backbone,
    demo_dir: str | None,
    folder: Path,
    heads: ProjectionHeads,
    facts: dict,
    history: list[dict],
) -> None:
    """The fine-tuned model as a local-dir folder (`save_as_local_dir`), plus the jointly trained heads,
    the facts and the per-step history."""
    save_as_local_dir(backbone, resolve_spec(backbone.spec, demo_dir), folder)
    save_heads(heads.cpu(), folder / "heads.safetensors", folder / "heads.json", {"trained": True, **facts})
    (folder / "finetune.json").write_text(json.dumps(facts, indent=2) + "\n")
    pl.DataFrame(history).write_parquet(folder / "history.parquet")
