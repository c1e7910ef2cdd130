import base64

import pytest

from auditstream.config import ConfigError, parse_config
from auditstream.settings_base import parse_duration

SECRET = base64.b64encode(b"0123456789abcdef").decode()


def minimal(**overrides):
    data = {
        "source": {"access_key": "auth-123", "secret_key": SECRET},
        "sinks": [{"type": "stdout", "name": "out"}],
    }
    data.update(overrides)
    return data


def test_defaults():
    config = parse_config(minimal(), env={})
    assert config.source.endpoint == "app.strongdm.com:443"
    assert config.source.insecure is False
    assert config.streams.poll_interval == 30 and config.streams.overlap == 300 and config.streams.settle == 0
    assert len(config.streams.stream_names()) == 29
    assert config.streams.long_query_recheck == 60 and config.streams.long_query_horizon == 86400


@pytest.mark.parametrize(("overlap", "risky"), [("5m", False), ("60s", False), ("59s", True), ("30s", True)])
def test_an_overlap_below_the_apis_clock_bound_says_what_it_risks(overlap, risky):
    """A gateway clock running ahead may move its stream's windows up to a minute past the
    API's clock (the reset bound); the sweep comes an overlap later, too early below that."""
    risk = parse_config(minimal(streams={"overlap": overlap}), env={}).streams.clock_bound_risk()
    assert (risk is not None) == risky
    if risk is not None:
        assert f"overlap {overlap}" in risk and "60s" in risk and "lost" in risk


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25), (12, 12), ("2d", 172800)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "5 minutes", "m5", "-1s", True, "1h 2x"])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_env_interpolation_and_default():
    data = minimal(
        source={"access_key": "${KEY}", "secret_key": "${SECRET}", "endpoint": "${HOST:-h.example:443}"}
    )
    config = parse_config(data, env={"KEY": "auth-env", "SECRET": SECRET})
    assert config.source.access_key == "auth-env"
    assert config.source.endpoint == "h.example:443"


def test_missing_env_names_the_key_and_variable():
    with pytest.raises(ConfigError, match=r"source\.secret_key.*NOPE"):
        parse_config(minimal(source={"access_key": "a", "secret_key": "${NOPE}"}), env={})


def test_secret_from_file(tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    config = parse_config(minimal(source={"access_key": "a", "secret_key_file": str(secret_file)}), env={})
    assert config.source.secret_key.get_secret_value() == SECRET


def test_access_key_from_file_too(tmp_path):
    (tmp_path / "ak").write_text("auth-from-file\n")
    config = parse_config(
        minimal(source={"access_key_file": str(tmp_path / "ak"), "secret_key": SECRET}), env={}
    )
    assert config.source.access_key == "auth-from-file"


def test_secret_file_missing_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"source: .*secret_key_file.*cannot read"):
        parse_config(minimal(source={"access_key": "a", "secret_key_file": str(tmp_path / "nope")}), env={})


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        (minimal(streams={"poll_interval": "soon"}), r"streams\.poll_interval: 'soon' is not a duration"),
        (minimal(streams={"include": ["activitys"]}), r"streams\.include: .*'activitys' matches no stream"),
        (minimal(streams={"pol_interval": "5s"}), r"streams\.pol_interval: unknown key"),
        (minimal(sinks=[{"type": "stdout", "name": "a", "format": "xml"}]), r"sinks\[0\]\.format"),
        (minimal(sinks=[{"type": "carrier-pigeon", "name": "a"}]), r"sinks\[0\]"),
        (
            minimal(sinks=[{"type": "splunk_hec", "name": "a", "url": "https://x:8088"}]),
            r"sinks\[0\]\.token: required key is missing",
        ),
        ({"sinks": [{"type": "stdout"}]}, r"source: required key is missing"),
        (minimal(source={"access_key": "a", "secret_key": "not base64!"}), r"source\.secret_key: .*base64"),
        (
            minimal(source={"access_key": "a", "secret_key": SECRET, "endpoint": "nohost"}),
            r"source\.endpoint",
        ),
        (minimal(streams={"start_at": "yesterday"}), r"streams\.start_at"),
        (minimal(streams={"poll_interval": "0s"}), r"streams\.poll_interval: .*more than 0"),
        (minimal(streams={"include": []}), r"streams: include \[\] .* selects no stream"),
        (
            minimal(streams={"start_at": "2999-01-01"}),
            r"streams\.start_at: 2999-01-01T00:00:00Z is in the future",
        ),
        (
            minimal(source={"access_key": "a", "secret_key": SECRET, "timeout": "0s"}),
            r"source\.timeout: .*greater than 0",
        ),
        (
            minimal(streams={"include": ["activities"], "exclude": ["activ*"]}),
            r"streams: include .* selects no stream",
        ),
        (
            minimal(
                sinks=[
                    {"type": "file", "name": "a", "path": "/var/log/audit.jsonl"},
                    {"type": "file", "name": "b", "path": "/var/log/../log/audit.jsonl", "format": "cef"},
                ]
            ),
            r"sinks\[1\]\.path \(b\): .* is also sinks\[0\]\.path \(a\)",
        ),
    ],
)
def test_errors_name_the_key_path(data, pattern):
    with pytest.raises(ConfigError, match=pattern):
        parse_config(data, source="cfg.toml", env={})


def test_secret_never_in_error_messages():
    secret = base64.b64encode(b"super-secret-value-xyz").decode()
    with pytest.raises(ConfigError) as err:
        parse_config(minimal(source={"access_key": "a", "secret_key": secret, "page_size": -1}), env={})
    assert secret not in str(err.value)


def test_start_at_forms():
    config = parse_config(minimal(streams={"start_at": "2024-05-01"}), env={})
    assert (
        config.streams.start_at is not None
        and config.streams.start_at.isoformat() == "2024-05-01T00:00:00+00:00"
    )
    config = parse_config(minimal(streams={"start_at": "now"}), env={})
    assert config.streams.start_at is None
