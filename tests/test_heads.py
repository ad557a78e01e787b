import numpy as np
import torch

from mtcxr.heads import ProjectionHeads, load_heads, project, save_heads


def test_untrained_head_is_the_identity_on_normalised_vectors():
    vectors = torch.nn.functional.normalize(torch.randn(5, 16), dim=1)
    heads = ProjectionHeads(16, 32)
    assert torch.allclose(heads.image(vectors), vectors, atol=1e-6)
    assert torch.allclose(heads.text(vectors), vectors, atol=1e-6)


def test_heads_round_trip_through_safetensors(tmp_path):
    heads = ProjectionHeads(8, 12, logit_scale=20.0)
    torch.nn.init.normal_(heads.image.down.weight)
    save_heads(heads, tmp_path / "h.safetensors", tmp_path / "h.json", {"variant": "x"})
    loaded, config = load_heads(tmp_path / "h.safetensors", tmp_path / "h.json")
    vectors = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    assert config["variant"] == "x" and config["hidden_dim"] == 12
    np.testing.assert_allclose(project(loaded.image, vectors), project(heads.eval().image, vectors), atol=1e-6)
    assert loaded.logit_scale.item() == torch.tensor(20.0).item() or abs(loaded.logit_scale.item() - 20.0) < 1e-4
