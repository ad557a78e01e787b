"""Randomly initialised models with BiomedCLIP's exact open_clip structure, as `local-dir:` folders.

BiomedCLIP's weights cannot be downloaded everywhere; a model of the same shape (timm ViT image tower
with a linear projection, HF BERT text tower with an MLP projection and CLS pooling, context 256, CLIP
mean/std) exercises the same loading and embedding code offline. `tiny` runs in seconds on a CPU;
`base` has BiomedCLIP's real sizes (ViT-B/16 at 224 px, BERT-base, vocab 30522) for benchmarks.
"""

from __future__ import annotations

from copy import deepcopy
from pathlib import Path

import torch

from mtcxr.models.backbone import CLIP_MEAN, CLIP_STD, TEXT_TOWER_DIR, save_local_dir

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # BiomedBERT's first five ids
CHARACTERS = list("abcdefghijklmnopqrstuvwxyz0123456789.,;:()/-%'")
WORDS = (
    "the of and in is are no there with without left right bilateral lung lungs heart size normal "
    "pleural effusion pneumothorax consolidation edema atelectasis cardiomegaly opacity lobe upper lower "
    "mid base small moderate large mild stable unchanged clear acute cardiopulmonary process tube line "
    "catheter pacemaker findings impression possible cannot be excluded may represent"
).split()

SIZES = {
    # test_vit is timm's own tiny VisionTransformer (width 64, 6 blocks, CLS pooling, 160 px): the
    # same class as vit_base_patch16_224. timm ViTs only take their native size (open_clip does not
    # pass image_size to timm), so the tiny model's crop is 160 px.
    "tiny": {
        "embed_dim": 48,
        "timm_model_name": "test_vit",
        "image_size": 160,
        "vocab_size": None,
        "bert": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    },
    "base": {
        "embed_dim": 512,
        "timm_model_name": "vit_base_patch16_224",
        "image_size": 224,
        "vocab_size": 30522,
        "bert": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    },
}


def biomedclip_model_cfg(size: str = "tiny", text_tower: str = TEXT_TOWER_DIR) -> dict:
    """open_clip `model_cfg` of BiomedCLIP (hub repo microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224)."""
    shape = SIZES[size]
    return {
        "embed_dim": shape["embed_dim"],
        "vision_cfg": {
            "timm_model_name": shape["timm_model_name"],
            "timm_model_pretrained": False,
            "timm_pool": "",
            "timm_proj": "linear",
            "image_size": shape["image_size"],
        },
        "text_cfg": {
            "hf_model_name": text_tower,
            "hf_tokenizer_name": text_tower,
            "hf_proj_type": "mlp",
            "hf_pooler_type": "cls_last_hidden_state_pooler",
            "context_length": 256,
        },
    }


def wordpiece_vocab(size: int | None = None) -> list[str]:
    """A lowercase WordPiece vocabulary (any text tokenizes), padded with `[unused…]` to `size`."""
    vocab = SPECIAL_TOKENS + CHARACTERS + [f"##{c}" for c in CHARACTERS] + WORDS
    if size is not None:
        vocab += [f"[unused{i}]" for i in range(size - len(vocab))]
    return vocab


def _write_text_tower(text_dir: Path, vocab: list[str], bert: dict) -> None:
    """BERT config and tokenizer files in one folder, as a Hugging Face model repo holds them."""
    from transformers import BertConfig, BertTokenizer

    text_dir.mkdir(parents=True, exist_ok=True)
    BertConfig(vocab_size=len(vocab), max_position_embeddings=512, **bert).save_pretrained(text_dir)
    (text_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True).save_pretrained(text_dir)


def write_biomedclip_like(folder: str | Path, size: str = "tiny", seed: int = 0) -> Path:
    """Write a random BiomedCLIP-shaped open_clip model to `folder` and return it (`local-dir:` layout).

    The BERT config and tokenizer live in `folder/text` (named by `hf_model_name`, a path relative to
    the folder, so the folder can move); the tokenizer files are also at the top, where open_clip
    reads a local-dir's tokenizer, as in the hub repo.
    """
    import open_clip

    if size not in SIZES:
        raise ValueError(f"size must be one of {list(SIZES)}, not {size!r}")
    folder = Path(folder)
    text_dir = folder / TEXT_TOWER_DIR
    shape = SIZES[size]
    _write_text_tower(text_dir, wordpiece_vocab(shape["vocab_size"]), shape["bert"])
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((text_dir / name).read_bytes())

    model_cfg = biomedclip_model_cfg(size)
    build_cfg = deepcopy(model_cfg)
    # Built from the absolute path (transformers resolves relative ones against the working directory);
    # no pretrained text weights exist to load.
    build_cfg["text_cfg"].update(hf_model_name=str(text_dir.resolve()), hf_model_pretrained=False)
    torch.manual_seed(seed)
    model = open_clip.CustomTextCLIP(**build_cfg)
    preprocess_cfg = {"mean": list(CLIP_MEAN), "std": list(CLIP_STD)}
    return save_local_dir(model, model_cfg, preprocess_cfg, folder)
