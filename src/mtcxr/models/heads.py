"""The projector heads of the multi-task method (docs/design.md, Models), described by a small JSON config."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn


class ResidualProjector(nn.Module):
    """x + W2·GELU(W1·LN(x)), then L2 normalisation. W2 starts at zero: untrained, it is the identity."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, hidden_dim)
        self.down = nn.Linear(hidden_dim, dim)
        nn.init.zeros_(self.down.weight)
        nn.init.zeros_(self.down.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(x + self.down(nn.functional.gelu(self.up(self.norm(x)))), dim=-1)


class ProjectionHeads(nn.Module):
    """Image and text projectors, a normal/abnormal classifier on the image side, a learnable temperature."""

    def __init__(self, dim: int, hidden_dim: int, logit_scale: float = 100.0, *, seed: int):
        super().__init__()
        # Initialised under a forked CPU RNG seeded with `seed`, so the weights depend on the seed alone:
        # never on, and without changing, the global torch RNG state (the untrained `zeroshot` head too).
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)  # not torch.manual_seed: that also reseeds CUDA
            self.image = ResidualProjector(dim, hidden_dim)
            self.text = ResidualProjector(dim, hidden_dim)
            self.classifier = nn.Linear(dim, 1)
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(logit_scale), dtype=torch.float32))
        self.config = {"dim": dim, "hidden_dim": hidden_dim, "logit_scale": logit_scale}

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.log_logit_scale.exp().clamp(max=100.0)

    def abnormal_logit(self, projected_image: torch.Tensor) -> torch.Tensor:
        return self.classifier(projected_image).squeeze(-1)


def save_heads(heads: ProjectionHeads, weights_path: str | Path, config_path: str | Path, extra: dict) -> None:
    """Write the heads' weights (safetensors) and their JSON config (+ training facts in `extra`)."""
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in heads.state_dict().items()}, str(weights_path))
    Path(config_path).write_text(json.dumps({**heads.config, **extra}, indent=2, sort_keys=True) + "\n")


def load_heads(weights_path: str | Path, config_path: str | Path) -> tuple[ProjectionHeads, dict]:
    """Load heads written by `save_heads` (safetensors: no unpickling); return (heads, config)."""
    from safetensors.torch import load_file

    config = json.loads(Path(config_path).read_text())
    # Any seed: every initial weight is replaced by the file's.
    heads = ProjectionHeads(config["dim"], config["hidden_dim"], config["logit_scale"], seed=0)
    heads.load_state_dict(load_file(str(weights_path)))
    return heads.eval(), config


@torch.inference_mode()
def project(projector: ResidualProjector, vectors: np.ndarray, batch_size: int = 65536) -> np.ndarray:
    """Apply a projector to a float32 matrix in blocks; return float32, L2-normalised."""
    out = np.empty_like(vectors, dtype=np.float32)
    for start in range(0, len(vectors), batch_size):
        out[start : start + batch_size] = projector(
            torch.from_numpy(np.ascontiguousarray(vectors[start : start + batch_size]))
        ).numpy()
    return out
