"""The run's config: the workflow's `config.yaml` overridden by `--configfile` and `--config`, checked.

Snakemake's convention: `config.yaml` is the default, and every `--configfile` (in order),
then `--config`, overrides only the keys it names, merging mappings key by key. The sources
are layered one at a time, so a key replaced whole is replaced by the last source that names
it. Some keys are replaced whole instead of merged, so that a preset gets exactly what it
lists and never inherits demo entries:

- the named collections `backbones` and `variants`: a config that names one gives the
  whole collection;
- `dataset` when the override sets `dataset.kind`: a dataset section describes one kind
  of data (a MIMIC root, a manifest, the synthetic generator's sizes);
- `finetune.backbones` when the override names it, `backbones` or `variants`: fine-tuned
  backbones are built from the backbones and variants listed beside them, so a preset never
  inherits the demo's.

`--config` values arrive parsed by YAML's base loader, every scalar a string
(`train='{epochs: 4}'` gives `{'epochs': '4'}`); a value still a string that holds a YAML
mapping or list is parsed before layering, so that it replaces and merges like a config
file's, and every scalar is converted to the type the schema declares before validation.

Snakemake keeps only the last of repeated `--configfile` or `--config` flags (argparse), and
hands cluster jobs only those; `check_repeated_flags` stops such a command line before any job. Defaults live in the schema
only (`workflow/schemas/config.schema.yaml`) and fill every key a config leaves out.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import jsonschema
import yaml

from mtcxr.errors import InputError
from mtcxr.tables import CHEXPERT_DISPLAY, ZEROSHOT_OBSERVATIONS

REPLACED_WHOLE = ("backbones", "variants")


class ConfigError(InputError, ValueError):
    """The config as a whole is unusable; the message names the key and the fix."""


def merged(base: Mapping, override: Mapping) -> dict:
    """Return `base` updated with `override`, recursively for mappings (Snakemake's update_config)."""
    result = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def layered(default: Mapping, override: Mapping) -> dict:
    """Return `default` overridden by `override`, replacing named collections and a re-kinded dataset whole."""
    base = copy.deepcopy(dict(default))
    for key in REPLACED_WHOLE:
        if key in override:
            base.pop(key, None)
    if isinstance(override.get("dataset"), Mapping) and "kind" in override["dataset"]:
        base.pop("dataset", None)
    names_finetuned = isinstance(override.get("finetune"), Mapping) and "backbones" in override["finetune"]
    if ("backbones" in override or "variants" in override or names_finetuned) and isinstance(
        base.get("finetune"), Mapping
    ):
        base["finetune"].pop("backbones", None)
    return merged(base, override)


def load_yaml(path: str | Path) -> dict:
    """Return the mapping in a YAML config file, or raise ConfigError naming the file."""
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"config file {path} cannot be read ({error}); fix it or leave it out.") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} holds a {type(loaded).__name__}, not a mapping of keys to values.")
    return loaded


def run_config(
    default_file: str | Path, configfiles: Iterable[str | Path], command_line: Mapping, schema_file: str | Path
) -> dict:
    """Return the checked config of a run: `default_file`, then each of `configfiles`, then `command_line`.

    `configfiles` may list `default_file` itself (Snakemake passes it on to cluster jobs):
    it is skipped, so that a job resolves exactly the config its submitting process did.
    """
    default_path = Path(default_file).resolve()
    sources = [load_yaml(path) for path in configfiles if Path(path).resolve() != default_path]
    sources.append(parsed_command_line(command_line))
    schema = load_yaml(schema_file)
    config = load_yaml(default_file)
    # One source at a time: a key replaced whole is what the last source naming it says, never
    # the union of two sources' entries.
    for source in sources:
        config = layered(config, source)
    check_moved_keys(config)
    config = coerced(config, schema)
    validate(config, schema)
    with_defaults(config, schema)
    check_variants(config, loss_names(schema))
    check_finetune(config)
    zeroshot_prompts(config["evaluate"]["zeroshot_classification"])
    return config


def parsed_command_line(values: Mapping) -> dict:
    """Return `--config` values with every string that holds a YAML mapping or list parsed into it.

    Snakemake parses most values itself; one it could not, or one given through its API as text,
    would otherwise replace a whole section as a string instead of naming the keys inside it.
    Scalars stay strings: `coerced` types them by the schema.
    """

    def parsed(value):
        if isinstance(value, str) and value.strip()[:1] in ("{", "["):
            try:
                loaded = yaml.safe_load(value)
            except yaml.YAMLError:
                return value  # left as text: the schema check names the key
            value = loaded if isinstance(loaded, (dict, list)) else value
        if isinstance(value, Mapping):
            return {key: parsed(item) for key, item in value.items()}
        return value

    return {key: parsed(value) for key, value in values.items()}


def check_repeated_flags(argv: Sequence[str]) -> None:
    """Raise ConfigError when a Snakemake command line repeats `--configfile` or `--config`.

    Snakemake (argparse) keeps only the last flag's files or values, silently, and passes only
    those on to cluster jobs, so the earlier ones cannot be honoured: the user is told to give
    them after one flag. `argv` that is not Snakemake's own command line is ignored.
    """
    if not argv or not _is_snakemake(argv[0]):
        return
    options = [token.split("=", 1)[0] for token in argv[1:]]
    repeated = {
        # argparse accepts an unambiguous prefix: --configf ... --configfiles all name --configfile(s)
        "--configfile": sum(len(o) > len("--config") and "--configfiles".startswith(o) for o in options),
        "--config": sum(o == "--config" or (o.startswith("-C") and not o.startswith("--")) for o in options),
    }
    examples = {"--configfile": "--configfile a.yaml b.yaml", "--config": "--config results=out train='{epochs: 4}'"}
    for flag, count in repeated.items():
        if count > 1:
            raise ConfigError(
                f"{flag} is given {count} times; Snakemake keeps only the last one's values and drops the "
                f"others silently. Give them all after one {flag}, in order (e.g. {examples[flag]})."
            )


def _is_snakemake(program: str) -> bool:
    """Whether `program` (argv[0]) is Snakemake's command: its script or `python -m snakemake`."""
    path = Path(program)
    return path.name == "snakemake" or (path.name == "__main__.py" and path.parent.name == "snakemake")


# Keys that moved: (old path, new path). An old config gets the move named, not "unexpected key".
MOVED_KEYS = ((("evaluate", "frontal_only"), ("images", "frontal_only")),)


def check_moved_keys(config: Mapping) -> None:
    """Raise ConfigError naming the new place of a key the config sets where it used to live."""
    for old, new in MOVED_KEYS:
        node = config
        for part in old[:-1]:
            node = node.get(part) if isinstance(node, Mapping) else None
        if isinstance(node, Mapping) and old[-1] in node:
            raise ConfigError(
                f"config key {'.'.join(old)} is now {'.'.join(new)} (it decides which images every stage "
                f"uses, not only evaluation): rename it in config.yaml, your --configfile or --config."
            )


def loss_names(schema: Mapping) -> list[str]:
    """The losses a variant may weight, as the schema lists them."""
    return list(schema["properties"]["variants"]["additionalProperties"]["properties"]["losses"]["properties"])


def coerced(value, schema: Mapping):
    """Return `value` with strings converted where the schema wants an integer, a number or a boolean."""
    kind = schema.get("type")
    if isinstance(value, dict):
        properties, extra = schema.get("properties", {}), schema.get("additionalProperties")
        return {
            key: coerced(item, properties.get(key, extra if isinstance(extra, Mapping) else {}))
            for key, item in value.items()
        }
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [coerced(item, schema["items"]) for item in value]
    if isinstance(value, str):
        text = value.strip()
        try:
            if kind == "integer":
                return int(text)
            if kind == "number":
                return _number(text)
        except ValueError:
            return value
        if kind == "boolean" and text.lower() in ("true", "false"):
            return text.lower() == "true"
        if kind == "array" or kind == "object":
            parsed = yaml.safe_load(text)
            if isinstance(parsed, (list, dict)):
                return coerced(parsed, schema)
    return value


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def validate(config: Mapping, schema: Mapping) -> None:
    """Raise ConfigError, one paragraph naming the key, for the first way `config` breaks `schema`."""
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is None:
        return
    key = ".".join(str(part) for part in error.absolute_path) or "(top level)"
    described = error.schema.get("description") if isinstance(error.schema, Mapping) else None
    hint = f" ({described})" if described else ""
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        hint = f"; known keys here: {', '.join(allowed)}" if allowed else hint
    raise ConfigError(
        f"config key {key}: {error.message}{hint}. Fix it in config.yaml, your --configfile or --config; "
        "every key is described in workflow/schemas/config.schema.yaml."
    )


def with_defaults(config: dict, schema: Mapping) -> None:
    """Fill, in place, every key the config leaves out with its schema default, recursively."""
    properties = schema.get("properties", {})
    for key, sub in properties.items():
        if key not in config and "default" in sub:
            config[key] = copy.deepcopy(sub["default"])
        if isinstance(config.get(key), dict):
            with_defaults(config[key], sub)
    extra = schema.get("additionalProperties")
    if isinstance(extra, Mapping):
        for key, item in config.items():
            if key not in properties and isinstance(item, dict):
                with_defaults(item, extra)


def check_variants(config: Mapping, losses: list[str]) -> None:
    """Raise ConfigError for a trained variant without a positive loss, or a run without `zeroshot`."""
    variants = config["variants"]
    if "zeroshot" not in variants:
        raise ConfigError(
            "variants: `zeroshot` is missing; it is the baseline every variant is compared against. "
            "Add `zeroshot: {train: false}`."
        )
    unknown = [name for name in config.get("xtra", {}).get("variants", []) if name not in variants]
    if unknown:
        raise ConfigError(
            f"xtra.variants names {unknown}, which are not in variants ({', '.join(variants)}); "
            "add them to variants, list the variants whose heads X-TRA's memory uses, or set xtra.variants: [] "
            "to run without X-TRA."
        )
    for name, variant in variants.items():
        if not variant.get("train", True):
            continue
        weights = variant.get("losses") or {}
        if not any(weight > 0 for weight in weights.values()):
            raise ConfigError(
                f"variants.{name} trains (train: true) but has no loss with a weight above 0 "
                f"(losses: {weights or 'none'}), so its heads would stay the identity and it would repeat zeroshot. "
                f"Give it at least one of {', '.join(losses)} with a positive weight, or set train: false."
            )


def check_finetune(config: Mapping) -> None:
    """Raise ConfigError for a fine-tuned backbone whose name, base or variants do not fit the config."""
    backbones, variants = config["backbones"], config["variants"]
    for name, entry in config.get("finetune", {}).get("backbones", {}).items():
        where = f"finetune.backbones.{name}"
        if name in backbones:
            raise ConfigError(
                f"{where}: {name!r} is already a backbone in `backbones:`; give the fine-tuned one a new name"
            )
        if entry["base"] not in backbones:
            raise ConfigError(
                f"{where}.base is {entry['base']!r}; it must be one of backbones ({', '.join(backbones)})"
            )
        variant = variants.get(entry["variant"])
        if variant is None or not variant.get("train", True):
            trained = [v for v, cfg in variants.items() if cfg.get("train", True)]
            raise ConfigError(
                f"{where}.variant is {entry['variant']!r}; it must be a trained variant ({', '.join(trained)})"
            )
        unknown = [v for v in entry.get("variants") or [] if v not in variants]
        if unknown or (entry.get("variants") and "zeroshot" not in entry["variants"]):
            raise ConfigError(
                f"{where}.variants must list variants of `variants:`, zeroshot among them; got {entry.get('variants')}"
            )


ZEROSHOT_KEY = "evaluate.zeroshot_classification"
PROMPT_SIDES = ("positive", "negative")


def zeroshot_prompts(section: Mapping) -> dict[str, dict[str, list[str]]]:
    """Every zero-shot observation's prompts, {observation: {positive: [...], negative: [...]}}, in CheXpert order.

    `section` is the config's `evaluate.zeroshot_classification`: the `positive` / `negative` templates, with
    {finding} replaced by the observation's display name in lower case (CheXzero's "pleural effusion" /
    "no pleural effusion"), unless `observations` gives the observation's own prompts for a side. Raises
    ConfigError, one line naming the key, for an unknown observation, No Finding, or an empty or blank prompt.
    """
    overrides = section.get("observations") or {}
    for name in overrides:
        if name == "no_finding":
            raise ConfigError(
                f"{ZEROSHOT_KEY}.observations.no_finding: No Finding has no prompts (it is the absence of the other "
                "13 observations, and the normal/abnormal `classification auc` rows score it already); remove it."
            )
        if name not in ZEROSHOT_OBSERVATIONS:
            raise ConfigError(
                f"{ZEROSHOT_KEY}.observations.{name}: not a CheXpert observation; name one of "
                f"{', '.join(ZEROSHOT_OBSERVATIONS)}."
            )
    prompts = {}
    for name in ZEROSHOT_OBSERVATIONS:
        finding = CHEXPERT_DISPLAY[name].lower()
        own = overrides.get(name) or {}
        prompts[name] = {}
        for side in PROMPT_SIDES:
            key = f"{ZEROSHOT_KEY}.observations.{name}.{side}" if side in own else f"{ZEROSHOT_KEY}.{side}"
            texts = own[side] if side in own else [template.replace("{finding}", finding) for template in section[side]]
            if not texts or any(not isinstance(text, str) or not text.strip() for text in texts):
                raise ConfigError(
                    f"{key}: every entry must be a non-empty prompt and the list must hold at least one; got {texts!r}."
                )
            prompts[name][side] = [text.strip() for text in texts]
    return prompts
