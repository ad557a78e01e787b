from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mtcxr.data.embedded_split import SplitEmbeddings
from mtcxr.models import train
from mtcxr.models.heads import ProjectionHeads, load_heads, project, save_heads


def test_untrained_head_is_the_identity_on_normalised_vectors():
    vectors = torch.nn.functional.normalize(torch.randn(5, 16), dim=1)
    heads = ProjectionHeads(16, 32, seed=0)
    assert torch.allclose(heads.image(vectors), vectors, atol=1e-6)
    assert torch.allclose(heads.text(vectors), vectors, atol=1e-6)


def test_heads_round_trip_through_safetensors(tmp_path):
    heads = ProjectionHeads(8, 12, logit_scale=20.0, seed=0)
    torch.nn.init.normal_(heads.image.down.weight)
    save_heads(heads, tmp_path / "h.safetensors", tmp_path / "h.json", {"variant": "x"})
    loaded, config = load_heads(tmp_path / "h.safetensors", tmp_path / "h.json")
    vectors = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    assert config["variant"] == "x" and config["hidden_dim"] == 12
    np.testing.assert_allclose(project(loaded.image, vectors), project(heads.eval().image, vectors), atol=1e-6)
    assert loaded.logit_scale.item() == torch.tensor(20.0).item() or abs(loaded.logit_scale.item() - 20.0) < 1e-4


def test_numpy_heads_give_torchs_projections_and_logits(tmp_path):
    """models.heads_numpy (evaluation's heads, without torch) against the heads themselves, trained-like."""
    from mtcxr.models import heads_numpy

    heads = ProjectionHeads(16, 8, seed=3)
    with torch.no_grad():
        for parameter in heads.parameters():
            parameter.normal_(0, 0.5)  # every weight away from its initial value, down projections included
    save_heads(heads, tmp_path / "h.safetensors", tmp_path / "h.json", {})
    weights = heads_numpy.load_weights(tmp_path / "h.safetensors")
    vectors = np.random.default_rng(0).standard_normal((50, 16)).astype(np.float32)
    for side in ("image", "text"):
        expected = project(getattr(heads.eval(), side), vectors)
        found = heads_numpy.project_numpy(weights, side, vectors)
        assert found.dtype == np.float32 and not np.allclose(found, vectors / np.linalg.norm(vectors, axis=1)[:, None])
        np.testing.assert_allclose(found, expected, rtol=0, atol=2e-6)
    with torch.no_grad():
        expected = heads.abnormal_logit(torch.from_numpy(vectors)).numpy()
    found = heads_numpy.abnormal_logits(weights, vectors)
    assert found.shape == (50,)
    np.testing.assert_allclose(found, expected, rtol=0, atol=1e-5)
    assert np.array_equal(np.argsort(found), np.argsort(expected))  # the AUC reads the order


def test_initial_weights_depend_on_the_seed_alone():
    torch.manual_seed(1)
    first = ProjectionHeads(16, 32, seed=7).state_dict()
    torch.manual_seed(2)
    state = torch.random.get_rng_state()
    second = ProjectionHeads(16, 32, seed=7).state_dict()
    assert torch.equal(torch.random.get_rng_state(), state), "construction leaves the global RNG alone"
    assert all(torch.equal(first[name], second[name]) for name in first)
    other = ProjectionHeads(16, 32, seed=8).state_dict()
    assert not torch.equal(first["image.up.weight"], other["image.up.weight"])


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def fake_split(n_images: int = 12, dim: int = 16) -> SplitEmbeddings:
    """One image per study, alternately normal and abnormal."""
    rng = np.random.default_rng(0)
    return SplitEmbeddings(
        image_ids=np.array([f"i{i}" for i in range(n_images)], dtype=object),
        image_vectors=unit_vectors(rng, n_images, dim),
        image_study=np.arange(n_images, dtype=np.int64),
        study_ids=np.array([f"s{i}" for i in range(n_images)], dtype=object),
        reports=["report"] * n_images,
        text_vectors=unit_vectors(rng, n_images, dim),
        abnormal=np.arange(n_images) % 2 == 0,
        positive_labels=np.zeros((n_images, 14), dtype=bool),
        metadata={"logit_scale": 50.0, "backbone": "demo", "spec": "demo"},
    )


def saved_heads(folder: Path, monkeypatch, variant_cfg: dict, seed: int) -> bytes:
    """Run `train_head` on a fake split; return the bytes of the safetensors it writes."""
    monkeypatch.setattr(train, "load_split", lambda *args: fake_split())
    folder.mkdir()
    train.train_head(
        train.HeadInputs(["images.parquet"], "texts.parquet", "images", "studies", "labels"),
        train.HeadOutputs(
            str(folder / "heads.safetensors"), str(folder / "heads.json"), str(folder / "history.parquet")
        ),
        "v",
        variant_cfg,
        train.TrainSettings(hidden_dim=24, epochs=2, batch_size=4),
        seed=seed,
        threads=torch.get_num_threads(),
    )
    return (folder / "heads.safetensors").read_bytes()


@pytest.mark.parametrize(
    "variant_cfg", [{"train": False}, {"losses": {"clip": 1.0, "bce": 0.5}}], ids=["zeroshot", "trained"]
)
def test_train_head_weights_are_reproducible_from_the_seed(tmp_path: Path, monkeypatch, variant_cfg):
    torch.manual_seed(100)  # whatever the global RNG state, the seed alone decides the weights
    first = saved_heads(tmp_path / "a", monkeypatch, variant_cfg, seed=0)
    torch.manual_seed(200)
    assert saved_heads(tmp_path / "b", monkeypatch, variant_cfg, seed=0) == first
    saved_heads(tmp_path / "c", monkeypatch, variant_cfg, seed=1)
    weights, other = (load_file(str(tmp_path / run / "heads.safetensors")) for run in ("a", "c"))
    assert not torch.equal(weights["image.up.weight"], other["image.up.weight"])  # W1 is seeded
    if variant_cfg.get("train") is False:
        # Untrained, W2 is zero whatever the seed: the head is the identity, the zero-shot backbone.
        assert not weights["image.down.weight"].any() and not other["image.down.weight"].any()


def test_train_settings_come_from_the_config_section_and_are_recorded(tmp_path: Path, monkeypatch):
    import json

    # The whole `train:` section: `seeds` is not a setting of one job (its seed is its own).
    assert train.TrainSettings.from_config({"epochs": 5, "seeds": [0, 1], "device": "cpu"}) == train.TrainSettings(
        epochs=5, device="cpu"
    )
    saved_heads(tmp_path / "trained", monkeypatch, {"losses": {"clip": 1.0}}, seed=0)
    saved_heads(tmp_path / "zeroshot", monkeypatch, {"train": False}, seed=0)
    trained, zeroshot = (json.loads((tmp_path / run / "heads.json").read_text()) for run in ("trained", "zeroshot"))
    assert {key: trained[key] for key in train.RECORDED_SETTINGS} == {
        **{key: getattr(train.TrainSettings(), key) for key in train.RECORDED_SETTINGS},
        "hidden_dim": 24,
        "epochs": 2,
        "batch_size": 4,
    }
    # An untrained head records its width alone: no training setting shaped it.
    assert zeroshot["hidden_dim"] == 24 and not set(train.RECORDED_SETTINGS) - {"hidden_dim"} & set(zeroshot)
