"""One loader for every backbone spec: `demo`, `hf-hub:…`, `local-dir:…` and open_clip `name:pretrained`.

Every later stage gets its image encoder, text encoder, tokenizer and preprocessing from
`load_backbone`, so the demo model travels the same path as a local copy of BiomedCLIP.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

log = logging.getLogger(__name__)

HF_PREFIX = "hf-hub:"
LOCAL_PREFIX = "local-dir:"
DEMO_SPEC = "demo"
WEIGHT_FILES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
)


class BackboneError(ValueError):
    """A backbone cannot be loaded; the message names the file and how to provide it."""


@dataclass
class Backbone:
    """A loaded CLIP-style model with what is needed to embed images and reports."""

    spec: str
    model: torch.nn.Module
    tokenizer: Callable
    preprocess: Callable
    embed_dim: int
    context_length: int
    device: torch.device
    logit_scale: float

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor) -> np.ndarray:
        """Return L2-normalised float32 embeddings of a preprocessed image batch."""
        with _autocast(self.device):
            features = self.model.encode_image(pixels.to(self.device, non_blocking=True))
        return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()

    @torch.inference_mode()
    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Return L2-normalised float32 embeddings of report texts (truncated to the context length)."""
        tokens = self.tokenizer(texts).to(self.device)
        with _autocast(self.device):
            features = self.model.encode_text(tokens)
        return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()


def _autocast(device: torch.device):
    # bf16 on GPU halves memory traffic; CPU stays in float32 for exact, portable values.
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def choose_device(requested: str = "auto") -> torch.device:
    """`auto` picks CUDA when present, else the CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def resolve_spec(spec: str, demo_dir: str | Path | None = None) -> str:
    """Turn the config's spec into an open_clip model name (`demo` becomes its local-dir folder)."""
    if spec == DEMO_SPEC:
        if demo_dir is None:
            raise BackboneError("the `demo` backbone needs the folder written by the pretrain_demo_backbone rule")
        return f"{LOCAL_PREFIX}{Path(demo_dir).resolve()}"
    return spec


def check_backbone_available(spec: str, demo_dir: str | Path | None = None) -> None:
    """Raise BackboneError, before any work starts, when the spec's files cannot be had."""
    if spec == DEMO_SPEC:
        return  # written by the workflow itself
    name = resolve_spec(spec, demo_dir)
    if name.startswith(LOCAL_PREFIX):
        folder = Path(name[len(LOCAL_PREFIX):])
        config = folder / "open_clip_config.json"
        if not folder.is_dir():
            raise BackboneError(f"backbone {spec!r}: folder {folder} does not exist; copy the model folder there.")
        if not config.is_file():
            raise BackboneError(
                f"backbone {spec!r}: {config} is missing; a local-dir: backbone needs open_clip_config.json "
                "and open_clip_pytorch_model.bin (or open_clip_model.safetensors) from the model's hub repo."
            )
        if not any((folder / weights).is_file() for weights in WEIGHT_FILES):
            raise BackboneError(
                f"backbone {spec!r}: no weights in {folder}; expected one of {list(WEIGHT_FILES)}."
            )
        return
    if name.startswith(HF_PREFIX):
        _check_hf_cached(name[len(HF_PREFIX):], spec)
        return
    model_name, _, tag = name.partition(":")
    import open_clip

    if model_name not in open_clip.list_models():
        raise BackboneError(f"backbone {spec!r}: open_clip has no model {model_name!r}; see open_clip.list_models().")
    if tag and not Path(tag).is_file():
        pretrained_cfg = open_clip.get_pretrained_cfg(model_name, tag)
        if not pretrained_cfg:
            raise BackboneError(
                f"backbone {spec!r}: {tag!r} is neither a pretrained tag of {model_name} "
                f"({open_clip.list_pretrained_tags_by_model(model_name)}) nor a weights file."
            )
        if os.environ.get("HF_HUB_OFFLINE") == "1" and pretrained_cfg.get("hf_hub"):
            _check_hf_cached(pretrained_cfg["hf_hub"].rstrip("/"), spec)


def _check_hf_cached(repo_id: str, spec: str) -> None:
    if os.environ.get("HF_HUB_OFFLINE") != "1":
        return  # the hub will be asked; the user's spec asked for it
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(repo_id, "open_clip_config.json"), str):
        raise BackboneError(
            f"backbone {spec!r}: HF_HUB_OFFLINE=1 and open_clip_config.json of {repo_id} is not in the Hugging Face "
            f"cache ({os.environ.get('HF_HOME', '~/.cache/huggingface')}). On a connected machine run "
            f"`huggingface-cli download {repo_id}` and copy the cache, or download the repo into a folder and use "
            f"`local-dir:/path/to/folder` as the spec."
        )


def load_backbone(spec: str, device: str = "auto", demo_dir: str | Path | None = None) -> Backbone:
    """Load the backbone named by `spec` in eval mode, with its own tokenizer and preprocessing."""
    import open_clip

    check_backbone_available(spec, demo_dir)
    name = resolve_spec(spec, demo_dir)
    torch_device = choose_device(device)
    if name.startswith((LOCAL_PREFIX, HF_PREFIX)):
        model, _, preprocess = open_clip.create_model_and_transforms(name)
    else:
        model_name, _, tag = name.partition(":")
        model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=tag or None)
    tokenizer = open_clip.get_tokenizer(name if name.startswith((LOCAL_PREFIX, HF_PREFIX)) else name.partition(":")[0])
    model = model.to(torch_device).eval()
    embed_dim = _embed_dim(model)
    context_length = int(getattr(tokenizer, "context_length", 77))
    logit_scale = float(model.logit_scale.exp().item()) if hasattr(model, "logit_scale") else 100.0
    log.info("loaded backbone %s on %s: dim %d, context %d", spec, torch_device, embed_dim, context_length)
    return Backbone(spec, model, tokenizer, preprocess, embed_dim, context_length, torch_device, logit_scale)


def _embed_dim(model: torch.nn.Module) -> int:
    visual = model.visual
    image_size = getattr(visual, "image_size", (224, 224))
    image_size = image_size if isinstance(image_size, (tuple, list)) else (image_size, image_size)
    with torch.inference_mode():
        probe = torch.zeros(1, 3, *image_size, device=next(model.parameters()).device)
        return int(model.encode_image(probe).shape[-1])


def save_local_dir(model: torch.nn.Module, model_cfg: dict, preprocess_cfg: dict, folder: str | Path) -> Path:
    """Write `model` as an open_clip `local-dir:` folder (config JSON + safetensors weights)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}, indent=2) + "\n"
    )
    state = {key: value.detach().contiguous().cpu() for key, value in model.state_dict().items()}
    save_file(state, folder / "open_clip_model.safetensors")
    return folder
