"""Backbone fine-tuning (mtcxr.models.finetune): which weights move, a killed run resumes to the same end (and only
under the settings it was written with), every backbone spec can be a base, and block counts are checked early."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from test_backbones import BIOMEDBERT, cache_repo, hub_named_copy
from tiny_workflow import snakemake

from mtcxr.config import ConfigError
from mtcxr.errors import InputError
from mtcxr.models import finetune
from mtcxr.models.backbone import load_backbone
from mtcxr.models.biomedclip_shape import write_biomedclip_like
from mtcxr.models.demo import demo_model_cfg
from mtcxr.models.towers import DEMO_TOWERS, backbone_towers, check_finetune_depths, model_cfg_towers
from mtcxr.tables import pixels_schema

from tiny_tree import write_tiny_demo_backbone, write_tiny_tree

REPO = Path(__file__).resolve().parents[1]

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
HEADS = {"hidden_dim": 8, "supcon_temperature": 0.1}  # the `train:` keys fine-tuning reads


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


def run(tree: dict, name: str, base: str | None = None, **settings) -> Path:
    out = tree["root"] / name
    finetune.finetune_backbone(
        base or f"local-dir:{tree['base']}",
        finetune.FinetuneInputs(tree["pixels"], tree["studies"], tree["labels"]),
        str(out),
        str(tree["root"] / f"{name}.ckpt"),
        MULTITASK,
        finetune.FinetuneSettings.from_config({**SETTINGS, **settings}, HEADS),
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
    # a fault of the config: its message alone reaches the job's log, without a traceback (mtcxr.logs)
    with pytest.raises(InputError, match=r"finetune.backbones.ft.image_blocks is 5, but the image tower has 4 blocks"):
        finetune.unfreeze(model, 5, 0, "finetune.backbones.ft")
    with pytest.raises(finetune.FinetuneError, match=r"text_layers is 3, but the text tower has 2 blocks"):
        finetune.unfreeze(model, 0, 3)


def kill_after_checkpoint(tree: dict, name: str, monkeypatch, at_step: int = 5, **settings) -> None:
    """Run with a checkpoint after every step and die right after the one of `at_step`, as a kill would."""
    saves = []
    original = finetune.save_checkpoint

    def save_then_die(path, **state):
        original(path, **state)
        saves.append(state["step"])
        if len(saves) == at_step:
            raise KeyboardInterrupt(f"killed after the checkpoint of step {at_step}")

    monkeypatch.setattr(finetune, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(tree, name, **{"image_blocks": 1, "text_layers": 1, "checkpoint_minutes": 0, **settings})
    monkeypatch.setattr(finetune, "save_checkpoint", original)
    assert (tree["root"] / f"{name}.ckpt").is_file() and saves == list(range(1, at_step + 1))


def assert_same_training(a: Path, b: Path) -> None:
    """Bit-identical backbone and heads, and the same per-step losses."""
    for name in ("open_clip_model.safetensors", "heads.safetensors"):
        assert changed(load_file(a / name), load_file(b / name)) == set(), name
    losses = [column for column in pl.read_parquet(a / "history.parquet").columns if column != "seconds"]
    assert (
        pl.read_parquet(a / "history.parquet")
        .select(losses)
        .equals(pl.read_parquet(b / "history.parquet").select(losses))
    )


def facts(folder: Path) -> dict:
    return json.loads((folder / "finetune.json").read_text())


@pytest.fixture(scope="module")
def whole(tree) -> Path:
    """The uninterrupted run that the interrupted ones below must reach."""
    return run(tree, "whole", image_blocks=1, text_layers=1)


def test_a_killed_run_resumes_to_the_uninterrupted_weights(tree, whole, monkeypatch, caplog):
    kill_after_checkpoint(tree, "resumed", monkeypatch)
    # checkpoint_minutes and device do not decide the weights: a rerun that changes them still resumes
    with caplog.at_level(logging.INFO, logger="mtcxr.models.finetune"):
        resumed = run(tree, "resumed", image_blocks=1, text_layers=1, checkpoint_minutes=1000, device="cpu")
    assert "at step 5 of 12 (same settings, base and data)" in caplog.text and "discarding" not in caplog.text
    assert_same_training(whole, resumed)
    assert len(pl.read_parquet(resumed / "history.parquet")) == 12  # 3 epochs x 4 steps
    assert {key: facts(resumed)[key] for key in ("steps", "epochs", "resumed_at_step")} == {
        "steps": 12,
        "epochs": 3,
        "resumed_at_step": 5,
    }
    assert not (tree["root"] / "resumed.ckpt").exists()


@pytest.mark.parametrize(
    ("change", "named"),
    [({"epochs": 1}, "epochs: 3 -> 1"), ({"head_lr": 5e-4, "grad_clip": 0.5}, "grad_clip: 1 -> 0.5; head_lr: 0.001")],
    ids=["epochs", "learning_rate"],
)
def test_a_checkpoint_of_other_settings_is_discarded(tree, monkeypatch, caplog, change, named):
    """The issue's case: killed at step 5 of a 3-epoch run, rerun with other settings: train those from step 0."""
    name = f"stale_{'_'.join(change)}"
    fresh = run(tree, f"fresh_{'_'.join(change)}", image_blocks=1, text_layers=1, **change)
    kill_after_checkpoint(tree, name, monkeypatch)
    with caplog.at_level(logging.INFO, logger="mtcxr.models.finetune"):
        rerun = run(tree, name, image_blocks=1, text_layers=1, checkpoint_minutes=0, **change)
    warning = next(record for record in caplog.records if record.levelno == logging.WARNING)
    assert "discarding the fine-tuning checkpoint" in warning.message and "stopped at step 5" in warning.message
    assert named in warning.message and "Training starts again from step 0" in warning.message
    assert "resuming" not in caplog.text
    assert_same_training(fresh, rerun)
    epochs = change.get("epochs", 3)
    history = pl.read_parquet(rerun / "history.parquet")
    assert history["step"].to_list() == list(range(1, 4 * epochs + 1))
    assert history["epoch"].max() == epochs - 1
    ignore = ("images_per_second",)
    assert {k: v for k, v in facts(rerun).items() if k not in ignore} == {
        k: v for k, v in facts(fresh).items() if k not in ignore
    }
    assert (facts(rerun)["steps"], facts(rerun)["epochs"], facts(rerun)["resumed_at_step"]) == (4 * epochs, epochs, 0)
    assert not (tree["root"] / f"{name}.ckpt").exists()


def test_a_checkpoint_without_a_fingerprint_is_discarded(tree, whole, monkeypatch, caplog):
    """A checkpoint of an older mtcxr records no settings: it cannot be shown to match, so it is not resumed."""
    kill_after_checkpoint(tree, "old_format", monkeypatch, at_step=2)
    path = tree["root"] / "old_format.ckpt"
    state = torch.load(path, weights_only=False)
    del state["fingerprint"]
    torch.save(state, path)
    with caplog.at_level(logging.INFO, logger="mtcxr.models.finetune"):
        rerun = run(tree, "old_format", image_blocks=1, text_layers=1)
    assert "records no settings (an older mtcxr wrote it)" in caplog.text and "resuming" not in caplog.text
    assert_same_training(whole, rerun)
    assert facts(rerun)["resumed_at_step"] == 0


def test_the_fingerprint_holds_what_decides_the_weights(tree):
    pairs = finetune.training_pairs(tree["pixels"], tree["studies"], tree["labels"])
    settings = {**SETTINGS, "backbone_lr": 0.0001}

    def fingerprint(**change):
        arguments = {"base_weights": "w", "settings": settings, "seed": 0, "pairs": pairs, **change}
        return finetune.training_fingerprint(
            "demo",
            arguments["base_weights"],
            MULTITASK["losses"],
            finetune.FinetuneSettings.from_config(arguments["settings"], HEADS),
            True,
            arguments["seed"],
            arguments["pairs"],
        )

    base = fingerprint()
    assert "checkpoint_minutes" not in base and "device" not in base and base["train_images"] == N
    assert fingerprint(settings={**settings, "checkpoint_minutes": 1, "device": "cuda", "batch_size": 4.0}) == base
    assert finetune.fingerprint_changes(base, fingerprint(base_weights="v", seed=1)) == [
        "base_weights: changed",
        "seed: 0 -> 1",
    ]
    fewer = finetune.TrainingPairs(
        pairs.image_ids[1:], pairs.pngs[1:], pairs.reports[1:], pairs.abnormal[1:], pairs.labels[1:]
    )
    assert finetune.fingerprint_changes(base, fingerprint(pairs=fewer)) == [
        "train_data: changed",
        "train_images: 16 -> 15",
    ]
    other_report = finetune.TrainingPairs(
        pairs.image_ids, pairs.pngs, ["x", *pairs.reports[1:]], pairs.abnormal, pairs.labels
    )
    assert finetune.fingerprint_changes(base, fingerprint(pairs=other_report)) == ["train_data: changed"]


def test_settings_from_the_rules_params():
    """The rule's `settings` (the shared block with the entry over it) and the `train:` keys the heads use;
    the entry's base and variant are not settings of the run, nor are train's own epochs."""
    entry = {"base": "demo", "variant": "multitask", "image_blocks": 2, "epochs": 1, "head_lr": 5e-4}
    settings = finetune.FinetuneSettings.from_config(entry, {"hidden_dim": 8, "supcon_temperature": 0.2, "epochs": 99})
    assert settings == finetune.FinetuneSettings(
        image_blocks=2, epochs=1, head_lr=5e-4, hidden_dim=8, supcon_temperature=0.2
    )
    assert finetune.FinetuneSettings.from_config({}) == finetune.FinetuneSettings()


def test_the_output_loads_as_a_backbone(tree):
    out = run(tree, "loadable", image_blocks=1)
    backbone = load_backbone(f"local-dir:{out}", device="cpu")
    assert backbone.encode_texts(["No pneumothorax."]).shape == (1, 16)


def test_unfreeze_finds_biomedclips_blocks(tmp_path):
    """BiomedCLIP's towers: timm ViT blocks (then norm, head) and HF BERT layers (then the projection)."""
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


# --------------------------------------------------------------------------------------------------
# Every backbone spec as a base: the result is a self-contained local-dir folder with the trained weights
# --------------------------------------------------------------------------------------------------

TEXTS = ["No acute cardiopulmonary process.", "Large left pleural effusion with adjacent atelectasis."]
HUB_REPO = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"


def as_written(backbone) -> tuple[dict, tuple[np.ndarray, np.ndarray]]:
    """The fine-tuned model's weights and embeddings, taken as it is written out. Its parameters are made
    trainable again first, as `load_backbone` leaves them: nn.MultiheadAttention runs another kernel (equal to
    about 1e-7) when some parameters are frozen."""
    for parameter in backbone.model.parameters():
        parameter.requires_grad_(True)
    state = {key: value.detach().clone() for key, value in backbone.model.state_dict().items()}
    return state, embeddings(backbone)


def embeddings(backbone) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 256, (48, 56), dtype=np.uint8)).convert("RGB") for _ in range(3)]
    pixels = torch.stack([backbone.preprocess(image) for image in images])
    return backbone.encode_images(pixels), backbone.encode_texts(TEXTS)


def test_a_named_open_clip_base_is_written_as_a_loadable_local_dir(tree, monkeypatch):
    """`name:/path/to/weights` (as `RN50:openai` is, once downloaded): the fine-tuned model, written out."""
    import open_clip

    torch.manual_seed(0)
    weights = tree["root"] / "vit_s_32.pt"
    torch.save(open_clip.create_model("ViT-S-32-alt").state_dict(), weights)
    written = []
    original = finetune.save_as_local_dir

    def keep_embeddings(backbone, name, folder):
        written.append(as_written(backbone))  # the fine-tuned model in memory, before it is written
        return original(backbone, name, folder)

    monkeypatch.setattr(finetune, "save_as_local_dir", keep_embeddings)
    out = run(tree, "named", base=f"ViT-S-32-alt:{weights}", image_blocks=1, text_layers=1, epochs=1)
    reloaded = load_backbone(f"local-dir:{out}", device="cpu")
    state, trained = written[0]
    assert changed(state, reloaded.model.state_dict()) == set() and state.keys() == reloaded.model.state_dict().keys()
    for trained_vectors, loaded_vectors in zip(trained, embeddings(reloaded), strict=True):
        np.testing.assert_array_equal(trained_vectors, loaded_vectors)
    config = json.loads((out / "open_clip_config.json").read_text())
    assert config["model_cfg"] == open_clip.get_model_config("ViT-S-32-alt")
    assert config["preprocess_cfg"]["size"] == [224, 224] and config["preprocess_cfg"]["mean"][0] == 0.48145466
    base = {key: value for key, value in torch.load(weights).items()}
    moved = changed(base, load_file(out / "open_clip_model.safetensors"))
    image_after = ("visual.transformer.resblocks.11.", "visual.ln_post.", "visual.proj")
    text_after = ("transformer.resblocks.9.", "ln_final.", "text_projection")
    assert moved and all(key.startswith(image_after + text_after) for key in moved)
    assert any(key.startswith(image_after) for key in moved) and any(key.startswith(text_after) for key in moved)
    assert facts(out)["base"] == f"ViT-S-32-alt:{weights}" and facts(out)["steps"] == 4


HUB_SCRIPT = """
import json, shutil, sys
from pathlib import Path
import numpy as np
from mtcxr.models import finetune
from mtcxr.models.backbone import load_backbone
sys.path.insert(0, sys.argv[2])
from test_finetune import HEADS, SETTINGS, MULTITASK, as_written, changed, embeddings

args = json.loads(sys.argv[1])
written = []
original = finetune.save_as_local_dir

def keep_embeddings(backbone, name, folder):
    written.append(as_written(backbone))
    return original(backbone, name, folder)

finetune.save_as_local_dir = keep_embeddings
finetune.finetune_backbone(
    args["base"], finetune.FinetuneInputs(args["pixels"], args["studies"], args["labels"]), args["out"],
    args["out"] + ".ckpt", MULTITASK,
    finetune.FinetuneSettings.from_config({**SETTINGS, "image_blocks": 1, "text_layers": 1, "epochs": 1}, HEADS),
)
shutil.rmtree(args["hf_home"])  # the written folder must load without the hub cache it came from
reloaded = load_backbone("local-dir:" + args["out"], device="cpu")
state, (trained_image, trained_text) = written[0]
assert changed(state, reloaded.model.state_dict()) == set() and state.keys() == reloaded.model.state_dict().keys()
image, text = embeddings(reloaded)
np.savez(args["out"] + ".npz", trained_image=trained_image, trained_text=trained_text, image=image, text=text)
"""


def test_a_hub_base_is_written_as_a_self_contained_local_dir(tree, tmp_path):
    """`hf-hub:` BiomedCLIP (a tiny model of its shape in an offline hub cache): its hub-named BERT tower's
    config and tokenizer are written into the folder, which then loads with the hub cache gone."""
    hf_home = tmp_path / "hf_home"
    shape = write_biomedclip_like(tmp_path / "shape", size="tiny", seed=3)
    hub_named = hub_named_copy(shape, tmp_path / "hub_named")
    files = ("open_clip_config.json", "open_clip_model.safetensors")
    cache_repo(hf_home / "hub", HUB_REPO, {name: hub_named / name for name in files})
    text_files = ("config.json", "vocab.txt", "tokenizer_config.json")
    cache_repo(hf_home / "hub", BIOMEDBERT, {name: shape / "text" / name for name in text_files})
    out = tree["root"] / "hub"
    args = {key: tree[key] for key in ("pixels", "studies", "labels")}
    args.update(base=f"hf-hub:{HUB_REPO}", out=str(out), hf_home=str(hf_home))
    # A fresh process: huggingface_hub and transformers read HF_HOME and HF_HUB_OFFLINE once, at import.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home)}
    env.pop("HF_HUB_CACHE", None)
    done = subprocess.run(
        [sys.executable, "-c", HUB_SCRIPT, json.dumps(args), str(Path(__file__).parent)],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = np.load(f"{out}.npz")
    np.testing.assert_array_equal(result["trained_image"], result["image"])
    np.testing.assert_array_equal(result["trained_text"], result["text"])
    text_cfg = json.loads((out / "open_clip_config.json").read_text())["model_cfg"]["text_cfg"]
    assert text_cfg["hf_model_name"] == text_cfg["hf_tokenizer_name"] == "text"
    assert json.loads((out / "text/config.json").read_text())["num_hidden_layers"] == 2
    assert (out / "tokenizer_config.json").is_file() and (out / "tokenizer.json").is_file()
    moved = changed(
        load_file(hub_named / "open_clip_model.safetensors"), load_file(out / "open_clip_model.safetensors")
    )
    assert any(key.startswith("visual.trunk.blocks.5.") for key in moved)
    assert any(key.startswith("text.transformer.encoder.layer.1.") for key in moved)
    assert not any(key.startswith(("visual.trunk.blocks.4.", "text.transformer.encoder.layer.0.")) for key in moved)


# --------------------------------------------------------------------------------------------------
# image_blocks / text_layers above a tower's depth: refused before any job where the depth can be read
# --------------------------------------------------------------------------------------------------


def test_the_demo_towers_are_the_demo_models():
    import open_clip

    model = open_clip.CLIP(**demo_model_cfg(16, 32))
    assert len(finetune.image_blocks(model)[0]) == DEMO_TOWERS["image"][0] == 4
    assert len(finetune.text_layers(model)[0]) == DEMO_TOWERS["text"][0] == 2
    for embed_dim, image_size in ((16, 32), (128, 64)):
        assert model_cfg_towers(demo_model_cfg(embed_dim, image_size)) == DEMO_TOWERS


def finetune_config(backbones: dict, **entry) -> dict:
    base = next(iter(backbones))
    return {
        "backbones": backbones,
        "finetune": {"image_blocks": 1, "text_layers": 0, "backbones": {"ft": {"base": base, "variant": "m", **entry}}},
    }


def test_depths_are_checked_from_each_kind_of_config(tmp_path, monkeypatch):
    import open_clip

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    model = open_clip.create_model("ViT-S-32-alt")
    named = {"vit": "ViT-S-32-alt:/weights.pt"}
    assert backbone_towers(named["vit"]) == {"image": (12, "VisionTransformer"), "text": (10, "text transformer")}
    assert (len(finetune.image_blocks(model)[0]), len(finetune.text_layers(model)[0])) == (12, 10)
    check_finetune_depths(finetune_config(named, image_blocks=12, text_layers=10))
    with pytest.raises(
        ConfigError,
        match=r"^finetune.backbones.ft.image_blocks is 13, but the image tower of its base 'vit' "
        r"\(VisionTransformer\) has 12 blocks; set it to at most 12",
    ):
        check_finetune_depths(finetune_config(named, image_blocks=13))
    shared = finetune_config(named)
    shared["finetune"]["text_layers"] = 11
    with pytest.raises(
        ConfigError,
        match=r"^finetune.text_layers \(which applies to finetune.backbones.ft, as it sets none of its own\)",
    ):
        check_finetune_depths(shared)

    shape = write_biomedclip_like(tmp_path / "shape", size="tiny")
    local = {"bmc": f"local-dir:{shape}"}
    assert backbone_towers(local["bmc"]) == {"image": (None, "timm test_vit"), "text": (2, "Hugging Face text model")}
    with pytest.raises(ConfigError, match=r"text tower of its base 'bmc' \(Hugging Face text model\) has 2 layers"):
        check_finetune_depths(finetune_config(local, text_layers=3))
    # A timm tower's depth is known once it is built: the job says so in one line (an InputError)
    check_finetune_depths(finetune_config(local, image_blocks=99))
    built = load_backbone(local["bmc"], device="cpu").model
    with pytest.raises(
        InputError, match=r"^finetune.backbones.ft.image_blocks is 99, but the image tower has 6 blocks"
    ):
        finetune.unfreeze(built, 99, 0, "finetune.backbones.ft")

    hub = {"bmc": f"hf-hub:{HUB_REPO}"}
    assert backbone_towers(hub["bmc"]) is None  # nothing cached: the job checks
    hub_named = hub_named_copy(shape, tmp_path / "hub_named")
    cache_repo(tmp_path / "hf_home/hub", HUB_REPO, {"open_clip_config.json": hub_named / "open_clip_config.json"})
    assert backbone_towers(hub["bmc"])["text"] == (None, f"Hugging Face text model {BIOMEDBERT}")
    cache_repo(tmp_path / "hf_home/hub", BIOMEDBERT, {"config.json": shape / "text/config.json"})
    assert backbone_towers(hub["bmc"])["text"] == (2, f"Hugging Face text model {BIOMEDBERT}")


def test_image_blocks_above_the_towers_depth_stop_the_dry_run(tmp_path):
    """The issue's `image_blocks: 99` on the demo: one paragraph before any job, not a traceback at job start."""
    entry = "finetune={backbones: {demo_ft: {base: demo, variant: multitask, image_blocks: 99}}}"
    done = snakemake("-n", "--config", f"results={tmp_path / 'results'}", entry)
    assert done.returncode == 1, done.stdout[-2000:]
    assert (
        "mtcxr: error: finetune.backbones.demo_ft.image_blocks is 99, but the image tower of its base 'demo' "
        "(ModifiedResNet) has 4 blocks; set it to at most 4" in done.stderr
    ), done.stderr
    assert "Traceback" not in done.stderr and 'File "' not in done.stderr and "Exception" not in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 3 and "finetune_backbone" not in done.stdout
