"""The projection heads (`mtcxr.models.heads`) applied in NumPy, straight from their safetensors file.

The evaluation jobs need the heads only for a few vectors (the classifier's logits, zero-shot prompts),
and importing torch would double their start-up (docs/design.md, Performance principles). The arithmetic
is `ResidualProjector` and `ProjectionHeads.classifier` written out; `tests/test_heads.py` holds it to
torch's to float32 rounding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# torch.nn.LayerNorm's default epsilon, and torch.nn.functional.normalize's.
LAYER_NORM_EPS = 1e-5
NORMALIZE_EPS = 1e-12


def load_weights(head_weights: str | Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(head_weights))


def project_numpy(weights: dict[str, np.ndarray], side: str, vectors: np.ndarray) -> np.ndarray:
    """The `side` ("image" or "text") projector on (N, D) vectors: x + W2·GELU(W1·LN(x)), L2-normalised."""
    from scipy.special import erf

    x = np.asarray(vectors, dtype=np.float32)
    mean = x.mean(axis=1, keepdims=True)
    variance = ((x - mean) ** 2).mean(axis=1, keepdims=True)
    normed = (x - mean) / np.sqrt(variance + LAYER_NORM_EPS) * weights[f"{side}.norm.weight"] + weights[
        f"{side}.norm.bias"
    ]
    hidden = normed @ weights[f"{side}.up.weight"].T + weights[f"{side}.up.bias"]
    hidden = 0.5 * hidden * (1.0 + erf(hidden / np.sqrt(2.0)))  # GELU, exact (torch's default)
    out = x + hidden @ weights[f"{side}.down.weight"].T + weights[f"{side}.down.bias"]
    norms = np.maximum(np.linalg.norm(out, axis=1, keepdims=True), NORMALIZE_EPS)
    return (out / norms).astype(np.float32)


def abnormal_logits(weights: dict[str, np.ndarray], projected_images: np.ndarray) -> np.ndarray:
    """The normal/abnormal classifier (one linear unit on the projected image): (N,) float32 logits."""
    weight, bias = weights["classifier.weight"], weights["classifier.bias"]  # (1, dim), (1,)
    return (np.asarray(projected_images, dtype=np.float32) @ weight[0] + bias[0]).astype(np.float32)
