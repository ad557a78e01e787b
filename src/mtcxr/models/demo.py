"""Pretrain the tiny demo backbone: an open_clip CLIP trained contrastively on a synthetic split
of its own, saved as a `local-dir:` folder so it loads exactly like a local copy of BiomedCLIP."""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mtcxr.data.datasets.synthetic import pretraining_pairs
from mtcxr.models.backbone import CLIP_MEAN, CLIP_STD, save_local_dir
from mtcxr.models.losses import clip_loss

log = logging.getLogger(__name__)


def demo_model_cfg(embed_dim: int, image_size: int) -> dict:
    """A small ModifiedResNet image tower and a 2-layer text transformer with CLIP's BPE tokenizer.

    Sized so that pretraining takes about a minute on two CPU cores. A convolutional tower learns
    the drawn findings from scratch far faster than a ViT of the same cost (which stayed near
    chance in that budget).
    """
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": image_size, "layers": [1, 1, 1, 1], "width": 16, "head_width": 32},
        "text_cfg": {"context_length": 80, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2, "mlp_ratio": 2.0},
    }


def pretrain_demo_backbone(
    output_dir: str | Path,
    n_studies: int = 1000,
    image_size: int = 64,
    embed_dim: int = 128,
    epochs: int = 12,
    batch_size: int = 128,
    learning_rate: float = 2e-3,
    warmup_steps: int = 50,
    seed: int = 0,
) -> dict:
    """Train the demo CLIP on synthetic pairs and write it to `output_dir`; return training stats."""
    import open_clip

    torch.manual_seed(seed)
    started = time.perf_counter()
    images, reports = pretraining_pairs(n_studies, seed, image_size)
    log.info("pretraining the demo backbone on %d synthetic image-report pairs", len(reports))
    # What decides the bits of the weights besides the config (mtcxr.reproducibility).
    log.info(
        "CPU math: threads %d, %s kernels (MKL_CBWR=%s)",
        torch.get_num_threads(),
        torch.backends.cpu.get_cpu_capability(),
        os.environ.get("MKL_CBWR", "unset"),
    )
    model_cfg = demo_model_cfg(embed_dim, image_size)
    preprocess_cfg = {
        "size": image_size,
        "mean": list(CLIP_MEAN),
        "std": list(CLIP_STD),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    model = open_clip.CLIP(**model_cfg)
    tokenizer = open_clip.SimpleTokenizer(context_length=model_cfg["text_cfg"]["context_length"])
    tokens = tokenizer(reports)
    # Pixels are normalised once up front, exactly as the preprocessing transform will at embed time.
    pixels = torch.from_numpy(images).float().div(255.0)
    mean, std = torch.tensor(CLIP_MEAN)[None, :, None, None], torch.tensor(CLIP_STD)[None, :, None, None]
    pixels = (pixels[:, None].expand(-1, 3, -1, -1) - mean) / std

    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.05)
    steps_per_epoch = math.ceil(len(reports) / batch_size)
    total = epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup_steps) * 0.5 * (1 + math.cos(math.pi * step / total))
    )
    generator = torch.Generator().manual_seed(seed)
    model.train()
    losses = []
    with tqdm(total=total, desc="pretrain demo backbone", unit="step") as progress:
        for epoch in range(epochs):
            order = torch.randperm(len(reports), generator=generator)
            for start in range(0, len(reports), batch_size):
                batch = order[start : start + batch_size]
                image_features = model.encode_image(pixels[batch], normalize=True)
                text_features = model.encode_text(tokens[batch], normalize=True)
                loss = clip_loss(image_features, text_features, model.logit_scale.exp().clamp(max=100))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                losses.append(loss.item())
                progress.update(1)
                progress.set_postfix(epoch=epoch, loss=f"{np.mean(losses[-steps_per_epoch:]):.3f}")
    model.eval()
    save_local_dir(model, model_cfg, preprocess_cfg, output_dir)
    stats = {
        "pairs": len(reports),
        "steps": total,
        "final_loss": float(np.mean(losses[-steps_per_epoch:])),
        "seconds": time.perf_counter() - started,
    }
    log.info("demo backbone written to %s: %s", output_dir, stats)
    return stats
