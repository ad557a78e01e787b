"""Backbones load offline through `load_backbone`, exactly as BiomedCLIP does, and fail with clear messages."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import open_clip
import polars as pl
import pytest
import torch
import yaml
from open_clip.hf_model import ClsLastHiddenStatePooler, HFTextEncoder
from open_clip.timm_model import TimmModel
from PIL import Image
from tiny_workflow import SIDE_RUNS, Running
from torchvision import transforms

from mtcxr.embedding_io import read_embeddings
from mtcxr.models.backbone import CLIP_MEAN, CLIP_STD, BackboneError, check_backbone_available, load_backbone
from mtcxr.models.biomedclip_shape import biomedclip_model_cfg, write_biomedclip_like

REPO = Path(__file__).resolve().parents[1]
BIOMEDBERT = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
REPORTS = ["No acute cardiopulmonary process.", "Large left pleural effusion with adjacent atelectasis."]


@pytest.fixture(scope="module")
def tiny_biomedclip(tmp_path_factory) -> Path:
    return write_biomedclip_like(tmp_path_factory.mktemp("models") / "biomedclip", size="tiny")


@pytest.fixture
def offline(monkeypatch, tmp_path) -> Path:
    """HF_HUB_OFFLINE=1 with an empty Hugging Face home; returns its hub cache folder."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return tmp_path / "hf_home" / "hub"


def grey_images(n: int, size: int = 96) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (size, size + 10), dtype=np.uint8), "L") for _ in range(n)]


def embed(backbone) -> tuple[np.ndarray, np.ndarray]:
    pixels = torch.stack([backbone.preprocess(image) for image in grey_images(3)])
    return backbone.encode_images(pixels), backbone.encode_texts(REPORTS)


def test_base_config_is_biomedclips():
    # As published in microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224, text tower aside.
    cfg = biomedclip_model_cfg("base", text_tower=BIOMEDBERT)
    assert cfg == {
        "embed_dim": 512,
        "vision_cfg": {
            "timm_model_name": "vit_base_patch16_224",
            "timm_model_pretrained": False,
            "timm_pool": "",
            "timm_proj": "linear",
            "image_size": 224,
        },
        "text_cfg": {
            "hf_model_name": BIOMEDBERT,
            "hf_tokenizer_name": BIOMEDBERT,
            "hf_proj_type": "mlp",
            "hf_pooler_type": "cls_last_hidden_state_pooler",
            "context_length": 256,
        },
    }
    assert CLIP_MEAN == (0.48145466, 0.4578275, 0.40821073) and CLIP_STD == (0.26862954, 0.26130258, 0.27577711)


def test_writer_is_deterministic_in_the_seed(tiny_biomedclip, tmp_path):
    weights = "open_clip_model.safetensors"
    same = write_biomedclip_like(tmp_path / "same", size="tiny", seed=0)
    other = write_biomedclip_like(tmp_path / "other", size="tiny", seed=1)
    assert (same / weights).read_bytes() == (tiny_biomedclip / weights).read_bytes()
    assert (other / weights).read_bytes() != (tiny_biomedclip / weights).read_bytes()
    assert (same / "text/config.json").read_text() == (tiny_biomedclip / "text/config.json").read_text()


def test_tiny_biomedclip_loads_offline_with_biomedclips_structure(tiny_biomedclip, offline):
    backbone = load_backbone(f"local-dir:{tiny_biomedclip}", device="cpu")
    model = backbone.model
    assert type(model) is open_clip.CustomTextCLIP
    assert isinstance(model.visual, TimmModel) and isinstance(model.visual.head.proj, torch.nn.Linear)
    assert model.visual.head.proj.in_features == 64 and model.visual.head.proj.out_features == 48
    assert isinstance(model.text, HFTextEncoder) and isinstance(model.text.pooler, ClsLastHiddenStatePooler)
    mlp = [type(layer) for layer in model.text.proj]
    assert mlp == [torch.nn.Linear, torch.nn.GELU, torch.nn.Linear]
    assert (model.text.proj[0].in_features, model.text.proj[0].out_features, model.text.proj[2].out_features) == (
        32,
        40,
        48,
    )
    assert backbone.embed_dim == 48 and backbone.context_length == 256
    assert backbone.tokenizer(REPORTS).shape == (2, 256)

    steps = {type(step): step for step in backbone.preprocess.transforms}
    assert steps[transforms.Resize].size == 160
    assert steps[transforms.Resize].interpolation == transforms.InterpolationMode.BICUBIC
    assert steps[transforms.CenterCrop].size == (160, 160)
    assert tuple(steps[transforms.Normalize].mean) == CLIP_MEAN and tuple(steps[transforms.Normalize].std) == CLIP_STD

    images, texts = embed(backbone)
    assert images.shape == (3, 48) and texts.shape == (2, 48) and images.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    again_images, again_texts = embed(load_backbone(f"local-dir:{tiny_biomedclip}", device="cpu"))
    np.testing.assert_array_equal(images, again_images)
    np.testing.assert_array_equal(texts, again_texts)
    assert not np.allclose(images[0], images[1])  # the random weights still tell images apart


def test_moved_folder_loads_the_same_model(tiny_biomedclip, offline, tmp_path, monkeypatch):
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(tiny_biomedclip, moved)
    monkeypatch.chdir(tmp_path / "elsewhere")  # the text tower resolves against the folder, not the cwd
    expected = embed(load_backbone(f"local-dir:{tiny_biomedclip}", device="cpu"))
    for spec in (f"local-dir:{moved}", "local-dir:copy"):
        for got, want in zip(embed(load_backbone(spec, device="cpu")), expected):
            np.testing.assert_array_equal(got, want)


def test_pretrained_tag_without_cached_weights_names_the_file(offline):
    with pytest.raises(BackboneError) as error:
        load_backbone("ViT-B-16:openai", device="cpu")
    message = str(error.value)
    assert "open_clip_pytorch_model.bin of timm/vit_base_patch16_clip_224.openai" in message
    assert str(offline) in message and "hf download timm/vit_base_patch16_clip_224.openai" in message
    assert "ViT-B-16:/path/to/open_clip_pytorch_model.bin" in message


@pytest.mark.parametrize(
    "missing, named",
    [
        ("text/config.json", "text/config.json"),
        ("tokenizer_config.json", "tokenizer_config.json"),
        ("open_clip_model.safetensors", "no weights"),
    ],
)
def test_missing_local_file_is_named(tiny_biomedclip, offline, tmp_path, missing, named):
    folder = shutil.copytree(tiny_biomedclip, tmp_path / "broken")
    (folder / missing).unlink()
    with pytest.raises(BackboneError, match=named.replace(".", r"\.")):
        check_backbone_available(f"local-dir:{folder}")


def cache_repo(cache: Path, repo_id: str, files: dict[str, Path]) -> None:
    """Lay files out as the Hugging Face hub cache does (refs/main names the snapshot)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs/main").write_text("0" * 40)
    for name, source in files.items():
        (repo / "snapshots" / ("0" * 40)).mkdir(parents=True, exist_ok=True)
        shutil.copy(source, repo / "snapshots" / ("0" * 40) / name)


def hub_named_copy(tiny_biomedclip: Path, folder: Path) -> Path:
    """The tiny model as the real BiomedCLIP names its text tower: by hub name, not by folder."""
    shutil.copytree(tiny_biomedclip, folder, ignore=shutil.ignore_patterns("text"))
    config = json.loads((folder / "open_clip_config.json").read_text())
    config["model_cfg"]["text_cfg"].update(hf_model_name=BIOMEDBERT, hf_tokenizer_name=BIOMEDBERT)
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    return folder


def test_hub_spec_whose_text_tower_is_not_cached_names_it(tiny_biomedclip, offline, tmp_path):
    repo = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
    folder = hub_named_copy(tiny_biomedclip, tmp_path / "hub_named")
    cache_repo(
        offline, repo, {name: folder / name for name in ("open_clip_config.json", "open_clip_model.safetensors")}
    )
    with pytest.raises(BackboneError, match=f"config.json of {BIOMEDBERT} \\(the HF text tower\\)"):
        check_backbone_available(f"hf-hub:{repo}")
    cache_repo(offline, BIOMEDBERT, {"config.json": tiny_biomedclip / "text/config.json"})
    with pytest.raises(
        BackboneError, match=f"tokenizer.json or vocab.txt of {BIOMEDBERT} \\(the text tower's tokenizer\\)"
    ):
        check_backbone_available(f"hf-hub:{repo}")
    with pytest.raises(BackboneError, match="open_clip_config.json of microsoft/other"):
        check_backbone_available("hf-hub:microsoft/other")


def test_hub_spec_and_hub_named_text_tower_load_from_the_cache(tiny_biomedclip, tmp_path):
    """The real BiomedCLIP's paths: `hf-hub:` from the HF cache, and a local copy whose text tower is a hub name."""
    repo = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
    cache = tmp_path / "hf_home/hub"
    folder = hub_named_copy(tiny_biomedclip, tmp_path / "hub_named")
    cache_repo(cache, repo, {name: folder / name for name in ("open_clip_config.json", "open_clip_model.safetensors")})
    text = tiny_biomedclip / "text"
    cache_repo(cache, BIOMEDBERT, {name: text / name for name in ("config.json", "vocab.txt", "tokenizer_config.json")})
    # A fresh process: huggingface_hub and transformers read HF_HOME and HF_HUB_OFFLINE once, at import.
    script = (
        "import sys, numpy as np; from mtcxr.models.backbone import load_backbone\n"
        "a, b = (load_backbone(spec, device='cpu') for spec in sys.argv[1:])\n"
        "texts = ['No pleural effusion.', 'Small right pneumothorax.']\n"
        "assert a.embed_dim == b.embed_dim == 48 and a.context_length == 256\n"
        "np.testing.assert_array_equal(a.encode_texts(texts), b.encode_texts(texts))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    env.pop("HF_HUB_CACHE", None)
    done = subprocess.run(
        [sys.executable, "-c", script, f"hf-hub:{repo}", f"local-dir:{folder}"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]


def shared_run_without_finetuning(folder: str, names: list[str]) -> list[str]:
    """copytree's `ignore`: leave out tiny.yaml's fine-tuned demo_ft, which the two-backbone run must not build."""
    return [name for name in names if name == "finetuned" or "demo_ft" in name]


def start_two_backbones(folder: Path, tiny_results: Path) -> tuple[tuple[Path, str], Running]:
    """A side run (tiny_workflow.SIDE_RUNS): the shared run's copy with a BiomedCLIP-shaped second backbone."""
    # A copy of the session's shared run, file times kept: the demo backbone's jobs are up to date, so
    # Snakemake runs only biomedclip's jobs and the aggregates over both backbones.
    results = folder / "results"
    shutil.copytree(tiny_results, results, copy_function=shutil.copy2, ignore=shared_run_without_finetuning)
    backbones = folder / "backbones.yaml"
    spec = f"local-dir:{write_biomedclip_like(folder / 'biomedclip', size='tiny')}"
    # One seed, two variants, no X-TRA and no report generation: what this test checks is a second backbone
    # beside the first, and the shared run checks the rest (tests/test_workflow.py).
    overrides = {
        "backbones": {"demo": "demo", "biomedclip": spec},
        "variants": {"zeroshot": {"train": False}, "multitask": {"losses": {"clip": 1.0, "supcon": 1.0, "bce": 1.0}}},
        "xtra": {"variants": []},
        "train": {"seeds": [0]},
        "generation": {"enabled": False},
    }
    backbones.write_text(yaml.safe_dump(overrides))
    # Only the files asserted below: the summary and the t-SNE figures (rule `figures`) of both backbones.
    targets = [
        str(results / name) for name in ("metrics/summary.md", "figures/tsne_demo.png", "figures/tsne_biomedclip.png")
    ]
    args = ["--nolock", "--cores", "1", *targets, "--configfile", "tests/configs/tiny.yaml", str(backbones)]
    running = Running([*args, "--config", f"results={results}"], REPO, {**os.environ, "HF_HUB_OFFLINE": "1"})
    return (results, spec), running


SIDE_RUNS["two_backbones"] = (("test_workflow_runs_two_backbones",), start_two_backbones)


@pytest.mark.slow
def test_workflow_runs_two_backbones(side_runs):
    (results, spec), done = side_runs.result("two_backbones")
    assert done.returncode == 0, done.stderr[-4000:]

    summary = pl.read_csv(results / "metrics/summary.csv")
    pairs = set(summary.drop_nulls("backbone").select("backbone", "variant").unique().iter_rows())
    # A source that names `backbones` replaces `finetune.backbones` too: tiny.yaml's demo_ft is not built
    # from a list of backbones it was not written against (README, Config: defaults and overrides).
    assert pairs == {(b, v) for b in ("demo", "biomedclip") for v in ("zeroshot", "multitask")}
    assert not (results / "models/finetuned").exists()
    for name, dim, expected_spec in (("demo", 32, "demo"), ("biomedclip", 48, spec)):
        ids, vectors, meta = read_embeddings(results / f"embeddings/{name}/images-0.parquet", "image_id")
        assert vectors.shape == (len(ids), dim) and meta["dim"] == dim
        assert meta["spec"] == expected_spec and meta["backbone"] == name and meta["normalized"]
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
        _, text_vectors, text_meta = read_embeddings(results / f"embeddings/{name}/texts.parquet", "study_id")
        assert text_vectors.shape[1] == dim and text_meta["spec"] == expected_spec
        assert (results / f"figures/tsne_{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## Backbone `biomedclip`" in (results / "metrics/summary.md").read_text()
