"""The config schema is the one source of every default: where a stage function or a command has a
default for a setting the config also holds, it equals the schema's (or the function has none)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml

from mtcxr.models import demo as demo_backbone
from mtcxr.models import embed, finetune, train
from mtcxr.retrieval import evaluate, search
from mtcxr.summary import figures, summarize
from mtcxr.xtra import evaluate as xtra_evaluate
from mtcxr.xtra import train as xtra_train

SCHEMA = yaml.safe_load((Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml").read_text())


def schema_default(key: str):
    """The schema default of a dotted config key, e.g. "embed.batch_size"."""
    node = SCHEMA
    for part in key.split("."):
        node = node["properties"][part]
    return node["default"]


# (function or settings class, parameter, config key): every keyword a workflow script fills from a config
# value, and every field of a settings object built from a config section.
PAIRS = [
    (embed.embed_image_shard, "batch_size", "embed.batch_size"),
    (embed.embed_image_shard, "device", "embed.device"),
    (embed.embed_texts, "batch_size", "embed.batch_size"),
    (embed.embed_texts, "device", "embed.device"),
    (evaluate.EvaluateSettings, "ks", "evaluate.ks"),
    (evaluate.EvaluateSettings, "precision_k", "evaluate.precision_k"),
    (evaluate.EvaluateSettings, "n_boot", "evaluate.bootstrap"),
    (evaluate.EvaluateSettings, "seed", "evaluate.seed"),
    (evaluate.EvaluateSettings, "protocols", "evaluate.protocols"),
    (evaluate.EvaluateSettings, "cxr_clip_images", "evaluate.cxr_clip_images"),
    (evaluate.EvaluateSettings, "per_class", "evaluate.label_5x200.per_class"),
    (evaluate.EvaluateSettings, "sample_seed", "evaluate.label_5x200.seed"),
    (evaluate.EvaluateSettings, "zeroshot_uncertain", "evaluate.zeroshot_classification.uncertain"),
    (summarize.summarize, "n_boot", "evaluate.bootstrap"),
    (summarize.summarize, "seed", "evaluate.seed"),
    (summarize.summarize, "examples", "generation.examples"),
    (xtra_evaluate.evaluate_xtra, "n_boot", "evaluate.bootstrap"),
    (xtra_evaluate.evaluate_xtra, "seed", "evaluate.seed"),
    (xtra_evaluate.evaluate_xtra, "uncertain", "xtra.uncertain"),
    *[
        (xtra_train.XtraSettings, name, f"xtra.{name}")
        for name in (
            "hidden_dim",
            "attention_heads",
            "dropout",
            "label_tokens",
            "uncertain",
            "epochs",
            "batch_size",
            "learning_rate",
            "weight_decay",
            "device",
        )
    ],
    (figures.tsne_figure, "perplexity", "figures.tsne_perplexity"),
    (figures.make_figures, "perplexity", "figures.tsne_perplexity"),
    (train.train_head, "frontal_only", "images.frontal_only"),
    *[
        (train.TrainSettings, name, f"train.{name}")
        for name in (
            "epochs",
            "batch_size",
            "learning_rate",
            "weight_decay",
            "hidden_dim",
            "supcon_temperature",
            "select",
            "criterion",
            "patience",
            "device",
        )
    ],
    *[
        (finetune.FinetuneSettings, name, f"finetune.{name}")
        for name in (
            "image_blocks",
            "text_layers",
            "epochs",
            "batch_size",
            "backbone_lr",
            "head_lr",
            "warmup_steps",
            "weight_decay",
            "grad_clip",
            "checkpoint_minutes",
            "device",
        )
    ],
    (finetune.FinetuneSettings, "hidden_dim", "train.hidden_dim"),
    (finetune.FinetuneSettings, "supcon_temperature", "train.supcon_temperature"),
    *[
        (demo_backbone.pretrain_demo_backbone, name, f"demo_backbone.{name}")
        for name in ("n_studies", "image_size", "embed_dim", "epochs", "batch_size", "learning_rate")
    ],
]


@pytest.mark.parametrize("function, parameter, key", PAIRS, ids=[f"{f.__name__}.{p}" for f, p, _ in PAIRS])
def test_code_defaults_are_the_schema_defaults(function, parameter, key):
    parameters = inspect.signature(function).parameters
    if parameter not in parameters:
        pytest.fail(f"{function.__name__} takes no {parameter}: update PAIRS")
    default = parameters[parameter].default
    if default is inspect.Parameter.empty:
        return  # no default of its own: the config always passes it
    if key == "evaluate.cxr_clip_images":
        assert default in ("first_frontal", "every_frontal")  # `auto` is resolved by the rule, per dataset
        return
    if isinstance(default, tuple):
        default = list(default)
    assert default == schema_default(key), (
        f"{function.__name__}({parameter}={default!r}) but the schema says {key}: {schema_default(key)!r}"
    )


def test_search_rejects_images_as_ingest_does():
    """`mtcxr search` runs without a config: its pixel limit is the schema's images.max_pixels."""
    assert search.MAX_PIXELS == schema_default("images.max_pixels")
