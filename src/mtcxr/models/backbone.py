"""One loader for every backbone spec: `demo`, `hf-hub:…`, `local-dir:…` and open_clip `name:pretrained`.

Every later stage gets its image encoder, text encoder, tokenizer and preprocessing from
`load_backbone`, so the demo model travels the same path as a local copy of BiomedCLIP.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

# torch is imported inside the functions that run a model: the pre-flight check runs on every
# `snakemake` start (a dry run included) and needs only files, not a 2-second torch import.

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
# What open_clip fetches from a hub repo: the safetensors copy first, else the .bin.
HUB_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")
# A BiomedCLIP-shaped folder keeps its HF text tower here; `hf_model_name` names it relative to the folder.
TEXT_TOWER_DIR = "text"
# OpenAI CLIP's normalisation, which BiomedCLIP and the demo backbone also use.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


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
    precision: str = "auto"

    def encode_images(self, pixels: torch.Tensor) -> np.ndarray:
        """Return L2-normalised float32 embeddings of a preprocessed image batch."""
        import torch

        with torch.inference_mode(), autocast(self.device, self.precision):
            features = self.model.encode_image(pixels.to(self.device, non_blocking=True))
        return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Return L2-normalised float32 embeddings of report texts (truncated to the context length)."""
        import torch

        with torch.inference_mode():
            tokens = self.tokenizer(texts).to(self.device)
            with autocast(self.device, self.precision):
                features = self.model.encode_text(tokens)
            return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()


# `auto`: bf16 on a GPU, where it halves memory traffic and runs on tensor cores; float32 on the CPU,
# for exact, portable values. `bf16` on the CPU runs the GPU's numeric path where a test can reach it.
PRECISIONS = ("auto", "bf16", "fp32")


def resolve_precision(device: torch.device, precision: str = "auto") -> str:
    """`bf16` or `fp32`: what `precision` means on `device`; an unknown name is a BackboneError."""
    if precision not in PRECISIONS:
        raise BackboneError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def autocast(device: torch.device, precision: str = "auto"):
    """The autocast context for a forward pass on `device` at `precision` (see PRECISIONS)."""
    import torch

    enabled = resolve_precision(device, precision) == "bf16"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def choose_device(requested: str = "auto") -> torch.device:
    """`auto` picks CUDA when present, else the CPU."""
    import torch

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
        _check_local_dir(Path(name[len(LOCAL_PREFIX) :]), spec)
    elif name.startswith(HF_PREFIX):
        _check_hf_repo(name[len(HF_PREFIX) :], spec)
    else:
        _check_pretrained_tag(name, spec)


def _check_local_dir(folder: Path, spec: str) -> None:
    config = folder / "open_clip_config.json"
    if not folder.is_dir():
        raise BackboneError(f"backbone {spec!r}: folder {folder} does not exist; copy the model folder there.")
    if not config.is_file():
        raise BackboneError(
            f"backbone {spec!r}: {config} is missing; a local-dir: backbone needs open_clip_config.json "
            "and open_clip_pytorch_model.bin (or open_clip_model.safetensors) from the model's hub repo."
        )
    if not any((folder / weights).is_file() for weights in WEIGHT_FILES):
        raise BackboneError(f"backbone {spec!r}: no weights in {folder}; expected one of {list(WEIGHT_FILES)}.")
    try:
        text_cfg = json.loads(config.read_text())["model_cfg"].get("text_cfg", {})
    except (ValueError, KeyError) as error:
        raise BackboneError(
            f"backbone {spec!r}: {config} is not an open_clip config with `model_cfg` ({error})."
        ) from None
    if text_cfg.get("hf_tokenizer_name"):
        # open_clip reads a local-dir's HF tokenizer from the folder itself, whatever the config names.
        missing = [] if (folder / "tokenizer_config.json").is_file() else ["tokenizer_config.json"]
        if not any((folder / name).is_file() for name in TOKENIZER_FILES):
            missing.append(" or ".join(TOKENIZER_FILES))
        if missing:
            raise BackboneError(
                f"backbone {spec!r}: the text tower's tokenizer needs {' and '.join(missing)} in {folder}; "
                f"copy them from the model's hub repo (or from {text_cfg['hf_tokenizer_name']!r})."
            )
    hf_model = text_cfg.get("hf_model_name")
    if not hf_model:
        return
    text_dir = folder / hf_model
    if text_dir.is_dir():
        if not (text_dir / "config.json").is_file():
            raise BackboneError(
                f"backbone {spec!r}: {text_dir / 'config.json'} is missing; the HF text tower {hf_model!r} "
                "is read from that folder: copy the text model's config.json there."
            )
    elif _offline():
        _require_cached(
            hf_model,
            ("config.json",),
            spec,
            "the HF text tower named by hf_model_name",
            f"or put the text model's config.json in {text_dir}/",
        )


def _check_hf_repo(repo_id: str, spec: str) -> None:
    if not _offline():
        return  # the hub will be asked; the user's spec asked for it
    remedy = "or download the repo into a folder and use `local-dir:/path/to/folder` as the spec"
    _require_cached(repo_id, ("open_clip_config.json",), spec, "the model config", remedy)
    _require_cached(repo_id, HUB_WEIGHT_FILES, spec, "the weights", remedy)
    from huggingface_hub import try_to_load_from_cache

    config = json.loads(
        Path(try_to_load_from_cache(repo_id, "open_clip_config.json", cache_dir=_hf_cache())).read_text()
    )
    text_cfg = config.get("model_cfg", {}).get("text_cfg", {})
    # open_clip builds the text tower from hf_model_name's config.json and the tokenizer from hf_tokenizer_name.
    if text_cfg.get("hf_model_name"):
        _require_cached(text_cfg["hf_model_name"], ("config.json",), spec, "the HF text tower", remedy)
    if text_cfg.get("hf_tokenizer_name"):
        _require_cached(text_cfg["hf_tokenizer_name"], TOKENIZER_FILES, spec, "the text tower's tokenizer", remedy)


def _check_pretrained_tag(name: str, spec: str) -> None:
    import open_clip

    model_name, _, tag = name.partition(":")
    if model_name not in open_clip.list_models():
        raise BackboneError(f"backbone {spec!r}: open_clip has no model {model_name!r}; see open_clip.list_models().")
    if not tag or Path(tag).is_file():
        return
    pretrained_cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if not pretrained_cfg:
        raise BackboneError(
            f"backbone {spec!r}: {tag!r} is neither a pretrained tag of {model_name} "
            f"({open_clip.list_pretrained_tags_by_model(model_name)}) nor a weights file."
        )
    if _offline() and pretrained_cfg.get("hf_hub"):
        # "org/repo/" means the repo's default weights file; "org/repo/file" names it.
        repo_id, filename = os.path.split(pretrained_cfg["hf_hub"])
        files = (filename,) if filename else HUB_WEIGHT_FILES
        _require_cached(
            repo_id,
            files,
            spec,
            f"the weights of {model_name}:{tag}",
            f"or give the weights file itself as `{model_name}:/path/to/{files[-1]}`",
        )


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def _hf_cache() -> Path:
    """The Hugging Face hub cache the environment names now (huggingface_hub reads it once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "huggingface"
    return Path(home).expanduser() / "hub"


def _require_cached(repo_id: str, filenames: tuple[str, ...], spec: str, what: str, remedy: str) -> None:
    from huggingface_hub import try_to_load_from_cache

    cache = _hf_cache()
    if any(isinstance(try_to_load_from_cache(repo_id, name, cache_dir=cache), str) for name in filenames):
        return
    raise BackboneError(
        f"backbone {spec!r}: HF_HUB_OFFLINE=1 and {' or '.join(filenames)} of {repo_id} ({what}) is not in the "
        f"Hugging Face cache {cache}. On a connected machine run `hf download {repo_id}` and copy that machine's "
        f"hub cache into {cache} (or point HF_HUB_CACHE at a copy), {remedy}."
    )


def _local_text_cfg(folder: Path) -> dict:
    """The folder's `text_cfg` with `hf_model_name` resolved against the folder when it names a subfolder.

    transformers resolves a relative path against the working directory, so a folder that carries its
    own text tower would only load from one place. Hub names (the real BiomedCLIP's) stay as they are and
    load from the HF cache. Text weights come from the folder's checkpoint, never from hf_model_name.
    """
    text_cfg = dict(json.loads((folder / "open_clip_config.json").read_text())["model_cfg"].get("text_cfg", {}))
    if text_cfg.get("hf_model_name"):
        if (folder / text_cfg["hf_model_name"]).is_dir():
            text_cfg["hf_model_name"] = str((folder / text_cfg["hf_model_name"]).resolve())
        text_cfg["hf_model_pretrained"] = False
    return text_cfg


def load_backbone(
    spec: str, device: str = "auto", demo_dir: str | Path | None = None, precision: str = "auto"
) -> Backbone:
    """Load the backbone named by `spec` in eval mode, with its own tokenizer and preprocessing; its
    forward passes run at `precision` (PRECISIONS; the weights stay float32)."""
    import open_clip

    check_backbone_available(spec, demo_dir)
    name = resolve_spec(spec, demo_dir)
    torch_device = choose_device(device)
    resolve_precision(torch_device, precision)  # an unknown name stops before the model is built
    if name.startswith(LOCAL_PREFIX):
        text_cfg = _local_text_cfg(Path(name[len(LOCAL_PREFIX) :]))
        model, _, preprocess = open_clip.create_model_and_transforms(name, text_cfg=text_cfg)
    elif name.startswith(HF_PREFIX):
        model, _, preprocess = open_clip.create_model_and_transforms(name)
    else:
        model_name, _, tag = name.partition(":")
        model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=tag or None)
    tokenizer = open_clip.get_tokenizer(name if name.startswith((LOCAL_PREFIX, HF_PREFIX)) else name.partition(":")[0])
    model = model.to(torch_device).eval()
    embed_dim = _embed_dim(model)
    context_length = int(getattr(tokenizer, "context_length", 77))
    logit_scale = float(model.logit_scale.exp().item()) if hasattr(model, "logit_scale") else 100.0
    log.info(
        "loaded backbone %s on %s (%s): dim %d, context %d",
        spec,
        torch_device,
        resolve_precision(torch_device, precision),
        embed_dim,
        context_length,
    )
    return Backbone(spec, model, tokenizer, preprocess, embed_dim, context_length, torch_device, logit_scale, precision)


def _embed_dim(model: torch.nn.Module) -> int:
    import torch

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
