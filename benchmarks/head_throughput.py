"""Training steps/s of the projector heads (`mtcxr.models.train.fit_heads`), the train_head stage's loop.

Random unit vectors stand in for a backbone's embeddings (the loop's cost does not depend on their
values): `--pairs` train image-report pairs of `--dim` dimensions with random normal/abnormal flags and
CheXpert labels, one epoch per timed run at `--batch-size` under the multitask losses (CLIP,
supervised contrastive, BCE). The first epoch (allocations, kernel set-up) is left out. The projected
MIMIC-CXR epoch is its about 240,000 frontal train pairs at the measured rate.

Usage: .venv/bin/python benchmarks/head_throughput.py [--pairs 32768] [--dim 512] [--batch-size 256]
       [--hidden-dim 512] [--epochs 2] [--device auto] [--threads 2]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from mtcxr.data.embedded_split import SplitEmbeddings
from mtcxr.models.backbone import choose_device
from mtcxr.models.train import TrainSettings, fit_heads
from mtcxr.tables import CHEXPERT_LABELS

MIMIC_TRAIN_FRONTAL = 240_000
MULTITASK = {"clip": 1.0, "supcon": 1.0, "bce": 1.0}


def random_split(pairs: int, dim: int, seed: int = 0) -> SplitEmbeddings:
    """`pairs` one-image studies with random unit vectors, flags and labels."""
    rng = np.random.default_rng(seed)

    def unit(n: int) -> np.ndarray:
        vectors = rng.standard_normal((n, dim), dtype=np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    ids = np.array([f"s{i}" for i in range(pairs)])
    return SplitEmbeddings(
        image_ids=ids,
        image_vectors=unit(pairs),
        image_study=np.arange(pairs),
        study_ids=ids,
        reports=[""] * pairs,
        text_vectors=unit(pairs),
        abnormal=rng.random(pairs) < 0.6,
        positive_labels=rng.random((pairs, len(CHEXPERT_LABELS))) < 0.15,
        metadata={},
    )


def steps_per_second(split: SplitEmbeddings, settings: TrainSettings) -> float:
    """Steps/s of one epoch after a first, untimed one."""
    fit_heads(split, None, MULTITASK, TrainSettings(**{**settings.__dict__, "epochs": 1}))  # warm-up epoch
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    fit_heads(split, None, MULTITASK, settings)
    seconds = time.perf_counter() - started
    steps = settings.epochs * -(-len(split.image_ids) // settings.batch_size)
    return steps / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=32_768)
    parser.add_argument("--dim", type=int, default=512, help="BiomedCLIP's embedding width")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--hidden-dim", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = choose_device(args.device)
    settings = TrainSettings(
        epochs=args.epochs, batch_size=args.batch_size, hidden_dim=args.hidden_dim, patience=0, device=str(device)
    )
    rate = steps_per_second(random_split(args.pairs, args.dim), settings)
    pairs_per_second = rate * args.batch_size
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"{platform.machine()} CPU"
    print(f"machine: {name}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print("| device | pairs | dim | batch | steps/s | pairs/s | one MIMIC epoch |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {device.type} | {args.pairs:,} | {args.dim} | {args.batch_size} | {rate:.1f} | {pairs_per_second:,.0f} "
        f"| {MIMIC_TRAIN_FRONTAL / pairs_per_second:,.1f} s |"
    )


if __name__ == "__main__":
    main()
