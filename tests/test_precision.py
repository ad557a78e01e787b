"""The GPU's numeric paths, run on the CPU: bf16 autocast in embedding and fine-tuning, and gradient
checkpointing (mtcxr.models.backbone.autocast, mtcxr.models.finetune). On CUDA `precision: auto` takes
these paths; here `precision: bf16` and `grad_checkpointing: true` force them, so that most of what can
break on a GPU breaks in this suite first."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import load_file
from test_finetune import changed, run, tree  # noqa: F401  (tree: the module-scoped fixture)

from mtcxr.models.backbone import BackboneError, autocast, load_backbone, resolve_precision
from mtcxr.models.biomedclip_shape import write_biomedclip_like
from mtcxr.models.finetune import use_grad_checkpointing

REPORTS = ["Small left pleural effusion.", "Lungs are clear.", "Moderate cardiomegaly.", "No pneumothorax."]


def test_auto_is_bf16_on_cuda_and_float32_on_the_cpu():
    assert resolve_precision(torch.device("cuda"), "auto") == "bf16"
    assert resolve_precision(torch.device("cpu"), "auto") == "fp32"
    assert resolve_precision(torch.device("cpu"), "bf16") == "bf16"
    assert resolve_precision(torch.device("cuda"), "fp32") == "fp32"
    with pytest.raises(BackboneError, match="precision 'fp16' is not one of auto, bf16, fp32"):
        resolve_precision(torch.device("cpu"), "fp16")
    assert use_grad_checkpointing(torch.device("cuda")) and not use_grad_checkpointing(torch.device("cpu"))
    assert use_grad_checkpointing(torch.device("cpu"), True) and not use_grad_checkpointing(torch.device("cuda"), False)
    with pytest.raises(ValueError, match="grad_checkpointing must be auto, true or false"):
        use_grad_checkpointing(torch.device("cpu"), "sometimes")


def test_cpu_autocast_runs_matmuls_in_bf16():
    with autocast(torch.device("cpu"), "bf16"):
        assert (torch.ones(4, 4) @ torch.ones(4, 4)).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "auto"):
        assert (torch.ones(4, 4) @ torch.ones(4, 4)).dtype == torch.float32


@pytest.fixture(scope="module")
def biomedclip_shaped(tmp_path_factory) -> str:
    return f"local-dir:{write_biomedclip_like(tmp_path_factory.mktemp('bf16') / 'bmc', size='tiny', seed=1)}"


def test_bf16_embeddings_are_float32_unit_vectors_near_the_float32_ones(biomedclip_shaped):
    """BiomedCLIP's shape (timm ViT + BERT) through the embedding path at bf16: float32, unit-norm output a
    bf16 rounding away from float32's (cosine > 0.99), and not equal to it (autocast did run)."""
    pixels = torch.randn(6, 3, 160, 160, generator=torch.Generator().manual_seed(0))
    exact = load_backbone(biomedclip_shaped, device="cpu", precision="fp32")
    half = load_backbone(biomedclip_shaped, device="cpu", precision="bf16")
    for encode in (lambda b: b.encode_images(pixels), lambda b: b.encode_texts(REPORTS)):
        want, got = encode(exact), encode(half)
        assert got.dtype == np.float32 and np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        cosines = (want * got).sum(axis=1)
        assert cosines.min() > 0.99 and not np.array_equal(want, got)


def test_bf16_fine_tuning_with_gradient_checkpointing_trains_on_the_cpu(tree):  # noqa: F811
    """The CUDA settings (bf16 autocast, activations recomputed in backward) on the demo backbone's last
    block: the losses stay finite, the block moves, earlier ones stay bit-identical, finetune.json says how
    it ran."""
    out = run(tree, "bf16_checkpointed", image_blocks=1, precision="bf16", grad_checkpointing=True)
    facts = json.loads((out / "finetune.json").read_text())
    assert facts["precision"] == "bf16" and facts["grad_checkpointing"] is True
    assert facts["peak_gpu_memory_gib"] is None and facts["steps"] == 12  # no GPU here; 16 pairs, batch 4, 3 epochs
    losses = pl.read_parquet(out / "history.parquet")["total"].to_numpy()
    assert np.isfinite(losses).all() and len(losses) == 12
    moved = changed(
        load_file(tree["base"] / "open_clip_model.safetensors"), load_file(out / "open_clip_model.safetensors")
    )
    assert moved and all(key.startswith(("visual.layer4.", "visual.attnpool.")) for key in moved)


def test_gradient_checkpointing_leaves_the_trained_weights_as_they_are(tree, biomedclip_shaped):  # noqa: F811
    """Checkpointing recomputes, it must not change what is learned. BiomedCLIP's timm ViT checkpoints its
    blocks; with only the last one trained, its input comes from frozen blocks, the classic case in which a
    checkpointed block silently loses its gradients."""
    plain = run(tree, "fp32_plain", base=biomedclip_shaped, image_blocks=1, grad_checkpointing=False)
    recomputed = run(tree, "fp32_checkpointed", base=biomedclip_shaped, image_blocks=1, grad_checkpointing=True)
    assert json.loads((recomputed / "finetune.json").read_text())["grad_checkpointing"] is True
    a = load_file(plain / "open_clip_model.safetensors")
    b = load_file(recomputed / "open_clip_model.safetensors")
    base = load_file(biomedclip_shaped.removeprefix("local-dir:") + "/open_clip_model.safetensors")
    assert any(key.startswith("visual.trunk.blocks.5.") for key in changed(base, b))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
