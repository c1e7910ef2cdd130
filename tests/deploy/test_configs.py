"""The configuration files the deployments ship (the Kubernetes ConfigMap's config.toml and the
systemd example) are valid auditstream configurations.

Three levels, each test saying which it proves: the file is TOML and keeps secrets out (only
``*_file`` keys or ``${ENV}``); every section but the sinks goes through the real loader
(``parse_config``), with the secret files substituted by a temporary directory, and the Splunk
HEC sink table through its settings model; the whole file goes through the loader, exactly as
the daemon reads it (its sink types must be registered in ``auditstream.sinks.registry``).
"""

from __future__ import annotations

import base64
import copy
import os
import tomllib
import typing
import uuid
from pathlib import Path
from typing import Any

import pytest

from auditstream.config import ConfigError, interpolate_env, parse_config
from auditstream.sinks.registry import SinkSettings
from auditstream.sinks.splunk_hec import SplunkHecSinkSettings
from tests.deploy.checks import K8S, STATE_DIR, SYSTEMD

K8S_CONFIG = K8S / "base" / "config.toml"
SYSTEMD_CONFIG = SYSTEMD / "config.toml"
K8S_SECRET_DIR = "/run/secrets/auditstream"
SECRET_KEY = base64.b64encode(os.urandom(32)).decode()
HEC_TOKEN = str(uuid.uuid4())
ACCESS_KEY = "auth-0123456789abcdef"
LITERAL_SECRET_KEYS = {"secret_key", "token", "password", "key_password"}


def _secrets(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sdm-secret-key").write_text(SECRET_KEY + "\n")
    (directory / "splunk-hec-token").write_text(HEC_TOKEN + "\n")
    return directory


def _k8s(tmp_path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The ConfigMap's config with the Secret mount replaced by a temporary directory, and the
    pod's environment (SDM_ACCESS_KEY from the Secret)."""
    secrets = _secrets(tmp_path / "secrets")
    text = K8S_CONFIG.read_text().replace(K8S_SECRET_DIR, str(secrets))
    return tomllib.loads(text), {"SDM_ACCESS_KEY": ACCESS_KEY}


def _systemd(tmp_path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The systemd example as is, with $CREDENTIALS_DIRECTORY pointing at a temporary directory
    (systemd sets it to /run/credentials/<unit>)."""
    secrets = _secrets(tmp_path / "credentials")
    text = SYSTEMD_CONFIG.read_text()
    return tomllib.loads(text.replace("REPLACE_WITH_ACCESS_KEY", ACCESS_KEY)), {
        "CREDENTIALS_DIRECTORY": str(secrets)
    }


CONFIGS = {"kubernetes": _k8s, "systemd": _systemd}


def _walk(node: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [
            item
            for k, v in node.items()
            for item in [(f"{path}.{k}".lstrip("."), v), *_walk(v, f"{path}.{k}")]
        ]
    if isinstance(node, list):
        return [item for i, v in enumerate(node) for item in _walk(v, f"{path}[{i}]")]
    return []


@pytest.mark.parametrize("path", [K8S_CONFIG, SYSTEMD_CONFIG], ids=["kubernetes", "systemd"])
def test_config_is_toml_without_secrets(path: Path) -> None:
    """Always runs: TOML syntax, the checkpoint on the state volume, and no secret written in the
    file (secrets only through *_file keys)."""
    config = tomllib.loads(path.read_text())
    assert config["checkpoint"]["path"] == f"{STATE_DIR}/checkpoints.db"
    assert config["source"]["endpoint"] == "app.strongdm.com:443"
    literal = [key for key, _ in _walk(config) if key.rsplit(".", 1)[-1] in LITERAL_SECRET_KEYS]
    assert literal == [], f"secrets written into the config: {literal}"
    files = sorted(key.rsplit(".", 1)[-1] for key, _ in _walk(config) if key.endswith("_file"))
    assert files == ["secret_key_file", "token_file"]
    assert [sink["type"] for sink in config["sinks"]] == ["splunk_hec"]


def _registered_sink_types() -> set[str]:
    union = typing.get_args(SinkSettings)[0]
    return {typing.get_args(model.model_fields["type"].annotation)[0] for model in typing.get_args(union)}


@pytest.mark.parametrize("name", CONFIGS)
def test_config_sections_pass_the_loader(tmp_path: Path, name: str) -> None:
    """Every section except [[sinks]] through parse_config (strict: unknown keys fail), the
    sinks replaced by a stdout sink; the secret files and ${ENV} are really read."""
    data, env = CONFIGS[name](tmp_path)
    data = copy.deepcopy(data)
    data["sinks"] = [{"type": "stdout", "name": "placeholder"}]
    config = parse_config(data, source=name, env=env)
    assert config.source.access_key == ACCESS_KEY
    assert config.source.secret_key.get_secret_value() == SECRET_KEY
    assert str(config.checkpoint.path) == f"{STATE_DIR}/checkpoints.db"
    expected_listen = "0.0.0.0:9464" if name == "kubernetes" else "127.0.0.1:9464"
    assert config.metrics.listen == expected_listen
    assert config.engine.shutdown_timeout == 20
    assert len(config.streams.stream_names()) > 2


@pytest.mark.parametrize("name", CONFIGS)
def test_splunk_sink_table_passes_its_model(tmp_path: Path, name: str) -> None:
    """The [[sinks]] Splunk HEC table against the sink's own settings model (token_file read)."""
    data, env = CONFIGS[name](tmp_path)
    sink = SplunkHecSinkSettings.model_validate(interpolate_env(data["sinks"][0], env))
    assert sink.token.get_secret_value() == HEC_TOKEN
    assert sink.index == "strongdm"


@pytest.mark.parametrize("name", CONFIGS)
def test_config_passes_the_loader_whole(tmp_path: Path, name: str) -> None:
    """The whole file, sinks included, exactly as `auditstream run` loads it."""
    data, env = CONFIGS[name](tmp_path)
    missing = {sink["type"] for sink in data["sinks"]} - _registered_sink_types()
    assert not missing, f"sink type(s) {sorted(missing)} not registered in auditstream.sinks.registry"
    config = parse_config(data, source=name, env=env)
    assert [sink.type for sink in config.sinks] == ["splunk_hec"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d["metrics"].__setitem__("listen_on", "0.0.0.0:9464"), "metrics.listen_on: unknown key"),
        (lambda d: d["streams"].__setitem__("include", ["activites"]), "streams.include"),
        (lambda d: d["engine"].__setitem__("shutdown_timeout", "20 seconds"), "engine.shutdown_timeout"),
    ],
)
def test_loader_check_fails_on_broken_copy(tmp_path: Path, change, expected: str) -> None:
    """The loader check can fail: a misspelled key, an unknown stream, a bad duration."""
    data, env = _k8s(tmp_path)
    data["sinks"] = [{"type": "stdout", "name": "placeholder"}]
    change(data)
    with pytest.raises(ConfigError, match=expected.replace("[", r"\[")):
        parse_config(data, source="broken", env=env)
