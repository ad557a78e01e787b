"""How many blocks each tower of a backbone has, read from its configuration alone (no torch, no download),
so that `finetune.backbones` asks for no more blocks than a tower has before any job starts.

The counts are those `mtcxr.models.finetune.image_blocks` and `text_layers` unfreeze from: a ModifiedResNet's
bottlenecks over its four stages, a VisionTransformer's residual blocks, a text transformer's layers, a
Hugging Face text model's `num_hidden_layers`. A timm image tower (BiomedCLIP's) is only known once it is
built, and a hub model's config only once it is cached: those counts are None and the job checks them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from mtcxr.config import ConfigError
from mtcxr.models.backbone import DEMO_SPEC, HF_PREFIX, LOCAL_PREFIX, _hf_cache

# mtcxr.models.demo.demo_model_cfg (which imports torch): ModifiedResNet layers [1, 1, 1, 1] and a
# 2-layer text transformer, whatever `demo_backbone:` sets (it sizes only widths and the image).
# tests/test_finetune.py holds the two to the same counts.
DEMO_TOWERS = {"image": (4, "ModifiedResNet"), "text": (2, "text transformer")}
# open_clip's CLIPVisionCfg and CLIPTextCfg default to 12 layers.
OPEN_CLIP_DEFAULT_LAYERS = 12


def model_cfg_towers(model_cfg: Mapping, folder: Path | None = None) -> dict[str, tuple[int | None, str]]:
    """{"image": (blocks, kind), "text": (layers, kind)} of an open_clip `model_cfg`; None where unknown.

    `folder` is the local-dir folder the config came from (an HF text tower may live in it).
    """
    vision = model_cfg.get("vision_cfg") or {}
    if vision.get("timm_model_name"):
        image = (None, f"timm {vision['timm_model_name']}")
    else:
        layers = vision.get("layers", OPEN_CLIP_DEFAULT_LAYERS)
        if isinstance(layers, (list, tuple)):
            image = (int(sum(layers)), "ModifiedResNet")
        else:
            image = (int(layers), "VisionTransformer")
    text_cfg = model_cfg.get("text_cfg") or {}
    if text_cfg.get("hf_model_name"):
        name = text_cfg["hf_model_name"]
        in_folder = folder is not None and (folder / name).is_dir()
        text = (_hf_layers(name, folder), "Hugging Face text model" + ("" if in_folder else f" {name}"))
    else:
        text = (int(text_cfg.get("layers", OPEN_CLIP_DEFAULT_LAYERS)), "text transformer")
    return {"image": image, "text": text}


def _hf_layers(name: str, folder: Path | None) -> int | None:
    """`num_hidden_layers` of an HF text model: from the folder's copy, else the hub cache, else None."""
    config = folder / name / "config.json" if folder is not None else None
    if config is None or not config.is_file():
        config = _cached(name, "config.json")
    if config is None:
        return None
    try:
        layers = json.loads(config.read_text()).get("num_hidden_layers")
    except (OSError, ValueError):
        return None
    return int(layers) if isinstance(layers, int) else None


def _cached(repo_id: str, filename: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, filename, cache_dir=_hf_cache())
    except Exception:  # noqa: BLE001 - a name that is no repo id: the count is unknown, the job checks it
        return None
    return Path(found) if isinstance(found, str) else None


def backbone_towers(spec: str) -> dict[str, tuple[int | None, str]] | None:
    """The towers of the backbone named by `spec` (a config value), or None where no config can be read."""
    if spec == DEMO_SPEC:
        return dict(DEMO_TOWERS)
    if spec.startswith(LOCAL_PREFIX):
        folder = Path(spec[len(LOCAL_PREFIX) :])
        try:
            model_cfg = json.loads((folder / "open_clip_config.json").read_text())["model_cfg"]
        except (OSError, ValueError, KeyError):
            return None  # check_backbone_available names what is wrong with the folder
        return model_cfg_towers(model_cfg, folder)
    if spec.startswith(HF_PREFIX):
        config = _cached(spec[len(HF_PREFIX) :], "open_clip_config.json")
        if config is None:
            return None
        return model_cfg_towers(json.loads(config.read_text()).get("model_cfg") or {})
    import open_clip  # a named model: the pre-flight check of `backbones` has imported it already

    model_cfg = open_clip.get_model_config(spec.partition(":")[0].replace("/", "-"))
    return model_cfg_towers(model_cfg) if model_cfg else None


def check_finetune_depths(config: Mapping) -> None:
    """Raise ConfigError when a `finetune.backbones` entry unfreezes more blocks than its base's tower has."""
    shared = config["finetune"]
    for name, entry in shared["backbones"].items():
        towers = None
        for key, tower in (("image_blocks", "image"), ("text_layers", "text")):
            wanted = int(entry[key] if key in entry else shared[key])
            if wanted == 0:
                continue
            if towers is None:
                towers = backbone_towers(config["backbones"][entry["base"]]) or {}
            depth, kind = towers.get(tower, (None, ""))
            if depth is None or wanted <= depth:
                continue
            where = f"finetune.backbones.{name}.{key}"
            if key not in entry:
                where = f"finetune.{key} (which applies to finetune.backbones.{name}, as it sets none of its own)"
            raise ConfigError(
                f"{where} is {wanted}, but the {tower} tower of its base {entry['base']!r} ({kind}) has {depth} "
                f"{'blocks' if tower == 'image' else 'layers'}; set it to at most {depth} (the last ones train "
                "with what follows them in the tower; 0 leaves the tower frozen) in config.yaml, your "
                "--configfile or --config."
            )
