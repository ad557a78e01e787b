"""The run's config: Snakemake's override convention, presets kept exact, --config strings typed, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mtcxr.config import ConfigError, check_repeated_flags, coerced, layered, load_yaml, parsed_command_line, run_config

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "config.yaml"
SCHEMA = REPO / "workflow/schemas/config.schema.yaml"
TINY = REPO / "tests/configs/tiny.yaml"
# A second config file listing two variants (tiny.yaml lists zeroshot, multitask and xtra).
TWO_VARIANTS = {"variants": {"zeroshot": {"train": False}, "clip": {"losses": {"clip": 1.0}}}, "xtra": {"variants": []}}


def resolve(*configfiles: Path, **command_line) -> dict:
    return run_config(DEFAULT, list(configfiles), command_line, SCHEMA)


def write(tmp_path: Path, name: str, content: dict) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


def test_command_line_overrides_only_the_keys_it_names():
    config = resolve(results="results_small", train={"epochs": "4"})
    default = load_yaml(DEFAULT)
    assert config["results"] == "results_small"
    assert config["train"]["epochs"] == 4 and isinstance(config["train"]["epochs"], int)
    assert config["train"]["learning_rate"] == default["train"]["learning_rate"]
    assert list(config["variants"]) == list(default["variants"])
    assert config["dataset"]["synthetic"] == default["dataset"]["synthetic"]


def test_partial_configfile_merges_over_the_default(tmp_path: Path):
    partial = write(tmp_path, "partial.yaml", {"evaluate": {"bootstrap": 200}, "images": {"shards": 3}})
    config = resolve(partial)
    assert config["evaluate"]["bootstrap"] == 200 and config["evaluate"]["ks"] == [1, 5, 10, 50]
    assert config["images"] == {
        "shards": 3,
        "cache_size": 128,
        "max_pixels": 60000000,
        "frontal_only": True,
        "max_aspect_ratio": 5,
    }
    assert config["dataset"]["kind"] == "synthetic"


def test_preset_is_exact(tmp_path: Path):
    config = resolve(REPO / "configs/mimic_cxr.yaml")
    # BiomedCLIP and the general-CLIP baseline the multi-task paper compares it with (issue 23).
    assert config["backbones"] == {
        "biomedclip": "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
        "openai_clip": "ViT-B-16:openai",
    }
    assert resolve(REPO / "configs/iu_xray.yaml")["backbones"] == config["backbones"]
    assert config["dataset"]["kind"] == "mimic_cxr" and "demo" not in config["backbones"]
    assert config["results"] == "results/mimic_cxr"
    # a preset listing fewer variants than the demo gets exactly those
    small = write(
        tmp_path,
        "small.yaml",
        {"variants": {"zeroshot": {"train": False}, "clip": {"losses": {"clip": 1}}}, "xtra": {"variants": []}},
    )
    assert list(resolve(small)["variants"]) == ["zeroshot", "clip"]


def test_dataset_with_a_kind_replaces_the_demo_dataset(tmp_path: Path):
    config = resolve(dataset={"kind": "manifest", "manifest": "m.csv"})
    assert config["dataset"]["manifest"] == "m.csv"
    assert config["dataset"]["split_fractions"] == {"train": 0.7, "validate": 0.1, "test": 0.2}  # the schema default
    views_only = resolve(dataset={"views": ["PA"]})
    assert views_only["dataset"]["kind"] == "synthetic" and views_only["dataset"]["views"] == ["PA"]


def test_default_file_passed_again_is_skipped(tmp_path: Path):
    """Snakemake hands cluster jobs --configfiles <preset> config.yaml: the job must resolve the same config."""
    preset = REPO / "configs/iu_xray.yaml"
    assert resolve(preset, DEFAULT) == resolve(preset)


@pytest.mark.parametrize(
    ("value", "schema", "expected"),
    [
        ("4", {"type": "integer"}, 4),
        ("0.5", {"type": "number"}, 0.5),
        ("2", {"type": "number"}, 2),
        ("1e-3", {"type": "number"}, 0.001),
        ("true", {"type": "boolean"}, True),
        ("False", {"type": "boolean"}, False),
        (["1", "5"], {"type": "array", "items": {"type": "integer"}}, [1, 5]),
        ("[1, 5]", {"type": "array", "items": {"type": "integer"}}, [1, 5]),
        ("four", {"type": "integer"}, "four"),
        ("PA", {"enum": ["PA", "AP"]}, "PA"),
    ],
)
def test_strings_are_typed_by_the_schema(value, schema, expected):
    assert coerced(value, schema) == expected


def test_layered_replaces_collections_whole():
    default = {"backbones": {"demo": "demo"}, "train": {"epochs": 40, "batch_size": 256}}
    assert layered(default, {"backbones": {"clip": "ViT-B-16"}, "train": {"epochs": 2}}) == {
        "backbones": {"clip": "ViT-B-16"},
        "train": {"epochs": 2, "batch_size": 256},
    }


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"train": {"epochs": "four"}}, r"^config key train\.epochs: 'four' is not of type 'integer'\. Fix it in"),
        ({"train": {"epoch": 4}}, r"^config key train: .*'epoch' was unexpected.*known keys here: .*epochs"),
        ({"on_bad_item": "skip"}, r"^config key on_bad_item: 'skip' is not one of \['reject', 'fail'\]"),
    ],
)
def test_schema_errors_are_one_paragraph_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message) as caught:
        resolve(**override)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 400


@pytest.mark.parametrize(
    "variant",
    [{"losses": {}}, {"losses": {"clip": 0, "bce": 0.0}}, {}, {"train": True, "losses": {"supcon": 0}}],
)
def test_variant_without_a_positive_loss_is_refused(variant):
    with pytest.raises(
        ConfigError, match=r"^variants\.broken trains \(train: true\) but has no loss with a weight above 0"
    ):
        resolve(variants={"zeroshot": {"train": False}, "broken": variant, "xtra": {"losses": {"clip": 1}}})


def test_untrained_variant_needs_no_loss():
    config = resolve(
        variants={"zeroshot": {"train": False}, "frozen": {"train": False, "losses": {}}}, xtra={"variants": []}
    )
    assert config["variants"]["frozen"] == {"train": False, "losses": {}}
    assert resolve()["variants"]["clip"] == {"losses": {"clip": 1.0}, "train": True}  # the schema default filled


def test_missing_zeroshot_is_refused():
    with pytest.raises(ConfigError, match="`zeroshot` is missing"):
        resolve(variants={"clip": {"losses": {"clip": 1.0}}, "xtra": {"losses": {"clip": 1}}})


def test_unreadable_configfile_is_named(tmp_path: Path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: {epochs: 4\n")
    with pytest.raises(ConfigError, match=f"config file {broken} cannot be read"):
        resolve(broken)


def test_xtra_variants_must_exist():
    with pytest.raises(
        ConfigError, match=r"xtra.variants names \['nope'\], which are not in variants.*xtra.variants: \[\]"
    ):
        resolve(xtra={"variants": ["nope"]})
    assert resolve(xtra={"variants": []})["xtra"]["variants"] == []


def test_a_moved_key_names_its_new_place():
    with pytest.raises(ConfigError, match=r"config key evaluate.frontal_only is now images.frontal_only"):
        resolve(evaluate={"frontal_only": False})
    assert resolve(images={"frontal_only": False})["images"]["frontal_only"] is False
    assert resolve()["images"]["frontal_only"] is True


def test_train_seeds_and_protocol_defaults():
    config = resolve()
    assert config["train"]["seeds"] == [0, 1, 2]  # config.yaml: the demo trains three seeds
    assert config["evaluate"]["protocols"] == ["mtcxr", "cxr_clip", "label_5x200"]
    assert config["evaluate"]["label_5x200"] == {"per_class": 200, "seed": 0}
    with pytest.raises(ConfigError, match=r"config key train.seeds"):
        resolve(train={"seeds": []})
    with pytest.raises(ConfigError, match=r"config key evaluate.protocols.0"):
        resolve(evaluate={"protocols": ["clip_benchmark"]})


def test_finetuned_backbones_follow_the_backbones_they_are_built_from(tmp_path: Path):
    assert set(resolve()["finetune"]["backbones"]) == {"demo_ft"}  # config.yaml: the demo's
    preset = write(tmp_path, "preset.yaml", {"backbones": {"biomedclip": "local-dir:/models/biomedclip"}})
    assert resolve(preset)["finetune"]["backbones"] == {}  # a preset with its own backbones: none inherited
    assert resolve(finetune={"backbones": {}})["finetune"]["backbones"] == {}
    with pytest.raises(ConfigError, match=r"finetune.backbones.ft.base is 'nope'"):
        resolve(finetune={"backbones": {"ft": {"base": "nope", "variant": "multitask"}}})
    with pytest.raises(ConfigError, match=r"finetune.backbones.ft.variant is 'zeroshot'; it must be a trained variant"):
        resolve(finetune={"backbones": {"ft": {"base": "demo", "variant": "zeroshot"}}})
    with pytest.raises(ConfigError, match=r"'demo' is already a backbone"):
        resolve(finetune={"backbones": {"demo": {"base": "demo", "variant": "multitask"}}})


def test_a_later_configfile_replaces_variants_whole(tmp_path: Path):
    """`--configfile tiny.yaml v2.yaml`: v2's variants, not the union; tiny's other keys stay."""
    v2 = write(tmp_path, "v2.yaml", TWO_VARIANTS)
    config = resolve(TINY, v2)
    assert list(config["variants"]) == ["zeroshot", "clip"]
    # tiny's demo_ft trains with multitask: v2 names the variants, so its fine-tuned backbones go too
    assert config["finetune"]["backbones"] == {}
    assert config["finetune"]["epochs"] == 1 and config["train"]["seeds"] == [0, 1]  # tiny's, merged
    assert config["results"] == "results/tiny" and config["xtra"]["k"] == 4
    # the other order: tiny.yaml names the variants last
    assert list(resolve(v2, TINY)["variants"]) == ["zeroshot", "multitask", "xtra"]


def test_a_source_that_does_not_name_a_whole_key_keeps_the_earlier_one(tmp_path: Path):
    partial = write(tmp_path, "partial.yaml", {"evaluate": {"bootstrap": 20}})
    config = resolve(TINY, partial)
    assert list(config["variants"]) == ["zeroshot", "multitask", "xtra"]
    assert set(config["finetune"]["backbones"]) == {"demo_ft"} and config["evaluate"]["bootstrap"] == 20
    assert config["evaluate"]["ks"] == [1, 5, 10]  # tiny's, under the partial file's bootstrap


@pytest.mark.parametrize(
    "variants",
    [
        # as Snakemake 9 hands it over: parsed by YAML's base loader, every scalar a string
        {"zeroshot": {"train": "false"}, "clip": {"losses": {"clip": "1.0"}}},
        # as text (a value Snakemake could not parse, or one given through its API)
        "{zeroshot: {train: false}, clip: {losses: {clip: 1.0}}}",
    ],
)
def test_command_line_variants_replace_the_configfiles(variants):
    config = resolve(TINY, variants=variants, xtra="{variants: []}")
    assert config["variants"] == {"zeroshot": {"train": False}, "clip": {"losses": {"clip": 1.0}, "train": True}}
    assert config["finetune"]["backbones"] == {} and config["xtra"]["variants"] == []
    assert config["xtra"]["k"] == 4  # `xtra` is merged, not replaced: tiny's k stays


@pytest.mark.parametrize("finetune", [{"backbones": {}}, "{backbones: {}}"])
@pytest.mark.parametrize("configfiles", [(), (TINY,)])
def test_command_line_switches_fine_tuning_off(finetune, configfiles):
    config = resolve(*configfiles, finetune=finetune)
    assert config["finetune"]["backbones"] == {}
    assert config["finetune"]["epochs"] == (1 if configfiles else 3)  # the rest of the section is merged
    assert list(config["variants"]) == (
        ["zeroshot", "multitask", "xtra"] if configfiles else list(load_yaml(DEFAULT)["variants"])
    )


def test_backbones_and_a_dataset_kind_are_the_last_sources(tmp_path: Path):
    first = write(
        tmp_path,
        "first.yaml",
        {"backbones": {"a": "local-dir:/models/a"}, "dataset": {"kind": "manifest", "manifest": "m.csv"}},
    )
    second = write(tmp_path, "second.yaml", {"backbones": {"b": "local-dir:/models/b"}, "dataset": {"views": ["PA"]}})
    config = resolve(first, second)
    assert config["backbones"] == {"b": "local-dir:/models/b"}
    # second.yaml names no kind: its dataset keys merge into first.yaml's manifest dataset
    assert config["dataset"]["kind"] == "manifest" and config["dataset"]["manifest"] == "m.csv"
    assert config["dataset"]["views"] == ["PA"]
    third = resolve(first, second, dataset={"kind": "iu_xray", "root": "/data/iu"})["dataset"]
    assert third["kind"] == "iu_xray" and "manifest" not in third and third["views"] == ["PA", "AP"]


def test_command_line_text_is_parsed_before_layering():
    assert parsed_command_line({"train": "{seeds: [0, 1]}", "results": "out", "xtra": {"variants": "[]"}}) == {
        "train": {"seeds": [0, 1]},
        "results": "out",
        "xtra": {"variants": []},
    }
    assert parsed_command_line({"results": "{not yaml"}) == {"results": "{not yaml"}  # the schema names it


@pytest.mark.parametrize(
    "argv",
    [
        ["/env/bin/snakemake", "--configfile", "a.yaml", "--configfile", "b.yaml"],
        ["/env/lib/snakemake/__main__.py", "-n", "--configfiles", "a.yaml", "--configfile=b.yaml"],
        ["snakemake", "--configf", "a.yaml", "--configfile", "b.yaml"],
    ],
)
def test_a_repeated_configfile_flag_is_refused(argv):
    with pytest.raises(ConfigError, match=r"^--configfile is given 2 times; Snakemake keeps only the last one's"):
        check_repeated_flags(argv)


def test_a_repeated_config_flag_is_refused():
    with pytest.raises(ConfigError, match=r"^--config is given 2 times.*after one --config"):
        check_repeated_flags(["snakemake", "--config", "results=a", "-C", "seed=1"])


@pytest.mark.parametrize(
    "argv",
    [
        ["/env/bin/snakemake", "--configfile", "a.yaml", "b.yaml", "--config", "results=x", "seed=1"],
        ["snakemake", "--cores", "2", "--config", "results=x", "--configfiles", "a.yaml"],
        ["/env/bin/pytest", "--configfile", "a.yaml", "--configfile", "b.yaml"],  # not Snakemake's command line
        [],
    ],
)
def test_one_flag_of_each_passes(argv):
    check_repeated_flags(argv)
