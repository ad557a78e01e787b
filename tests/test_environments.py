"""Rule environments match the package pins, and every shipped config passes the schema."""

import tomllib
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted([REPO / "config.yaml", *REPO.glob("configs/*.yaml"), *REPO.glob("tests/configs/*.yaml")])


def pyproject_pins() -> set[str]:
    return set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])


@pytest.mark.parametrize("env_file", sorted(REPO.glob("workflow/envs/*.yaml")), ids=lambda p: p.name)
def test_environment_pins_equal_pyproject(env_file):
    env = yaml.safe_load(env_file.read_text())
    pip_sections = [entry["pip"] for entry in env["dependencies"] if isinstance(entry, dict) and "pip" in entry]
    assert len(pip_sections) == 1, f"{env_file.name} needs one pip section"
    pins = {line for line in pip_sections[0] if not line.startswith("-e")}
    assert pins == pyproject_pins()
    assert "python=3.11" in env["dependencies"]


def test_every_rule_that_runs_code_has_an_environment():
    text = "\n" + "\n".join(p.read_text() for p in (REPO / "workflow/rules").glob("*.smk"))
    rules = [block for block in text.split("\nrule ")[1:]]
    running = [rule for rule in rules if "script:" in rule or "shell:" in rule]
    assert len(running) == sum("conda:" in rule for rule in rules) == 29
    assert all("conda:" in rule for rule in running)


@pytest.mark.parametrize("config_file", CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_configs_validate(config_file):
    config = yaml.safe_load(config_file.read_text())
    validate(config, str(REPO / "workflow/schemas/config.schema.yaml"))
    assert config["dataset"]["kind"] in {"synthetic", "mimic_cxr", "iu_xray", "manifest"}


def test_schema_rejects_a_wrong_type():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["images"]["shards"] = "two"
    with pytest.raises(Exception, match="shards|two"):
        validate(config, str(REPO / "workflow/schemas/config.schema.yaml"))
