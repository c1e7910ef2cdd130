"""The configs we ship are valid, and the example documents every key the schema has."""

from __future__ import annotations

import re
import tomllib
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from auditstream.config import AppConfig, parse_config
from auditstream.emulator import DEMO_SECRET_KEY
from auditstream.sinks.registry import AnySinkSettings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "auditstream.example.toml"


def load_with_secrets(path: Path, tmp_path: Path) -> AppConfig:
    """Point the example's secret files at temporary ones, as a deployment would mount them."""
    text = path.read_text().replace("/run/secrets/auditstream/", f"{tmp_path}/")
    for name in ("sdm-secret-key", "splunk-hec-token", "collector-token", "redaction-key"):
        (tmp_path / name).write_text(DEMO_SECRET_KEY if name == "sdm-secret-key" else f"{name}-value")
    return parse_config(tomllib.loads(text), source=str(path), env={"SDM_ACCESS_KEY": "auth-example"})


def test_example_config_is_valid(tmp_path):
    config = load_with_secrets(EXAMPLE, tmp_path)
    assert config.source.access_key == "auth-example"
    assert config.source.secret_key.get_secret_value() == DEMO_SECRET_KEY
    assert {s.type for s in config.sinks} == {"splunk_hec", "syslog", "http", "file"}
    assert len(config.streams.stream_names()) == 29


def _fields(model: type[BaseModel], seen: set[type]) -> set[str]:
    if model in seen:
        return set()
    seen.add(model)
    names: set[str] = set()
    for name, field in model.model_fields.items():
        names.add(name)
        for arg in _flatten(field.annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                names |= _fields(arg, seen)
    return names


def _flatten(annotation: object) -> list[object]:
    args = typing.get_args(annotation)
    if not args:
        return [annotation]
    return [leaf for arg in args for leaf in _flatten(arg)]


def test_example_documents_every_key():
    text = EXAMPLE.read_text()
    keys = set(re.findall(r"(?m)^\s*#?\s*([a-z_]+)\s*=", text))
    keys |= set(re.findall(r"(?:\[|\{|,)\s*\"?([a-z_]+)\"?\s*=", text))
    keys |= set(re.findall(r"\[(?:sinks\.)?([a-z_]+)\]", text))
    keys |= {key.removesuffix("_file") for key in keys}  # secret_key_file documents secret_key
    expected = _fields(AppConfig, set())
    for sink_model in typing.get_args(AnySinkSettings):
        expected |= _fields(sink_model, set())
    undocumented = sorted(expected - keys)
    assert not undocumented, f"config/auditstream.example.toml does not mention: {undocumented}"


def test_demo_configs_agree_and_parse():
    shipped = (ROOT / "config" / "demo.toml").read_text()
    embedded = (ROOT / "auditstream" / "demo.toml").read_text()
    assert shipped == embedded, (
        "config/demo.toml and the built-in auditstream/demo.toml must be the same file"
    )
    config = parse_config(tomllib.loads(shipped), env={})
    assert config.source.insecure and config.metrics.listen == "127.0.0.1:9464"
    assert [s.type for s in config.sinks] == ["stdout"]


@pytest.mark.parametrize(
    "path", sorted(ROOT.glob("deploy/**/config.toml")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_deploy_configs_parse_as_toml(path):
    assert tomllib.loads(path.read_text())["source"]
