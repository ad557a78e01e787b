"""Backbone fine-tuning (mtcxr.finetune): which weights move, and a killed run resumes to the same end."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from mtcxr import finetune
from mtcxr.demo_backbone import demo_model_cfg
from mtcxr.tables import pixels_schema

from tiny_tree import write_tiny_demo_backbone, write_tiny_tree

N = 16
SETTINGS = {
    "image_blocks": 0,
    "text_layers": 0,
    "epochs": 3,
    "batch_size": 4,
    "backbone_lr": 1e-3,
    "head_lr": 1e-3,
    "warmup_steps": 2,
    "weight_decay": 1e-4,
    "grad_clip": 1.0,
    "checkpoint_minutes": 1000,
    "device": "cpu",
}
MULTITASK = {"losses": {"clip": 1.0, "supcon": 1.0, "bce": 1.0}}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> dict:
    """A tiny untrained demo-shaped backbone (local-dir) and 16 train studies with cached 32 px images."""
    root = tmp_path_factory.mktemp("finetune")
    write_tiny_demo_backbone(root / "base", 16)
    reports = ["Small left pleural effusion.", "Lungs are clear.", "Moderate cardiomegaly.", "No pneumothorax."] * 4
    positive = [["pleural_effusion"], ["no_finding"], ["cardiomegaly"], ["no_finding"]] * 4
    vectors = np.eye(N, dtype=np.float32)
    paths = write_tiny_tree(root, ["train"] * N, reports, vectors, vectors, positive=positive)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(N):
        png = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(png, format="PNG")
        rows.append(
            {
                "image_id": f"i{i}",
                "study_id": f"s{i}",
                "split": "train",
                "view": "PA",
                "width": 32,
                "height": 32,
                "png": png.getvalue(),
            }
        )
    pq.write_table(pa.Table.from_pylist(rows, schema=pixels_schema()), root / "shard-0.parquet")
    return {**paths, "root": root, "base": root / "base", "pixels": [str(root / "shard-0.parquet")]}


def run(tree: dict, name: str, **settings) -> Path:
    out = tree["root"] / name
    finetune.finetune_backbone(
        f"local-dir:{tree['base']}",
        tree["pixels"],
        tree["studies"],
        tree["labels"],
        str(out),
        str(tree["root"] / f"{name}.ckpt"),
        MULTITASK,
        {**SETTINGS, **settings},
        hidden_dim=8,
        supcon_temperature=0.1,
        seed=0,
    )
    return out


def changed(before: dict, after: dict) -> set[str]:
    return {key for key in before if not torch.equal(before[key], after[key])}


def test_head_only_changes_only_the_heads(tree):
    out = run(tree, "head_only")
    base = load_file(tree["base"] / "open_clip_model.safetensors")
    assert changed(base, load_file(out / "open_clip_model.safetensors")) == set()
    heads = load_file(out / "heads.safetensors")
    assert any(key.endswith("up.weight") and heads[key].abs().sum() > 0 for key in heads)  # W2 left zero init
    assert (out / "finetune.json").is_file() and not (tree["root"] / "head_only.ckpt").exists()


def test_last_block_moves_and_earlier_blocks_stay_bit_identical(tree):
    out = run(tree, "last_block", image_blocks=1)
    base = load_file(tree["base"] / "open_clip_model.safetensors")
    moved = changed(base, load_file(out / "open_clip_model.safetensors"))
    # The demo tower's blocks are layer1..layer4 (one Bottleneck each); the last is layer4, then attnpool.
    assert moved and all(key.startswith(("visual.layer4.", "visual.attnpool.")) for key in moved)
    assert any(key.startswith("visual.layer4.") for key in moved) and any(
        key.startswith("visual.attnpool.") for key in moved
    )
    # text_layers 0: the text tower, token embedding and projection untouched
    assert not any(key.startswith(("transformer.", "token_embedding", "ln_final", "text_projection")) for key in moved)


def test_unfreeze_counts_and_rejects_too_many(tree):
    import open_clip

    model = open_clip.CLIP(**demo_model_cfg(16, 32))
    trainable = finetune.unfreeze(model, 1, 1)
    expected = {
        id(p)
        for p in [
            *model.visual.layer4.parameters(),
            *model.visual.attnpool.parameters(),
            *model.transformer.resblocks[-1].parameters(),
            *model.ln_final.parameters(),
            model.text_projection,
        ]
    }
    assert {id(p) for p in trainable} == expected
    assert {id(p) for p in model.parameters() if p.requires_grad} == expected
    with pytest.raises(ValueError, match="the image tower has 4 blocks; cannot unfreeze the last 5"):
        finetune.unfreeze(model, 5, 0)


def test_a_killed_run_resumes_to_the_uninterrupted_weights(tree, monkeypatch):
    whole = run(tree, "whole", image_blocks=1, text_layers=1)
    saves = []
    original = finetune.save_checkpoint

    def save_then_die(path, **state):
        original(path, **state)
        saves.append(state["step"])
        if len(saves) == 5:
            raise KeyboardInterrupt("killed after the checkpoint of step 5")

    monkeypatch.setattr(finetune, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(tree, "resumed", image_blocks=1, text_layers=1, checkpoint_minutes=0)
    assert (tree["root"] / "resumed.ckpt").is_file() and saves == [1, 2, 3, 4, 5]
    monkeypatch.setattr(finetune, "save_checkpoint", original)
    resumed = run(tree, "resumed", image_blocks=1, text_layers=1, checkpoint_minutes=0)
    for name in ("open_clip_model.safetensors", "heads.safetensors"):
        assert changed(load_file(whole / name), load_file(resumed / name)) == set(), name
    assert len(__import__("polars").read_parquet(resumed / "history.parquet")) == 12  # 3 epochs x 4 steps


def test_the_output_loads_as_a_backbone(tree):
    from mtcxr.backbone import load_backbone

    out = run(tree, "loadable", image_blocks=1)
    backbone = load_backbone(f"local-dir:{out}", device="cpu")
    assert backbone.encode_texts(["No pneumothorax."]).shape == (1, 16)


def test_unfreeze_finds_biomedclips_blocks(tmp_path):
    """BiomedCLIP's towers: timm ViT blocks (then norm, head) and HF BERT layers (then the projection)."""
    from mtcxr.backbone import load_backbone
    from mtcxr.biomedclip_shape import write_biomedclip_like

    model = load_backbone(f"local-dir:{write_biomedclip_like(tmp_path / 'tiny')}", device="cpu").model
    trainable = {id(p) for p in finetune.unfreeze(model, 2, 1)}
    trunk = model.visual.trunk
    for block in trunk.blocks[-2:]:
        assert all(id(p) in trainable for p in block.parameters())
    assert not any(id(p) in trainable for block in trunk.blocks[:-2] for p in block.parameters())
    assert all(id(p) in trainable for p in model.visual.head.parameters())
    layers = model.text.transformer.encoder.layer
    assert all(id(p) in trainable for p in layers[-1].parameters())
    assert not any(id(p) in trainable for p in layers[0].parameters())
    assert not any(id(p) in trainable for p in model.text.transformer.embeddings.parameters())
    assert all(id(p) in trainable for p in model.text.proj.parameters())
