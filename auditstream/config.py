"""Configuration: TOML, ``${ENV}`` interpolation, ``*_file`` secrets, strict validation.

Every error names the file, the key path (``sinks[1].url``) and the expected form, because
the person reading it is usually at 3 a.m. with a SIEM that went quiet.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator

from auditstream.formats import EncoderSettings
from auditstream.formats.cef import CefSettings
from auditstream.formats.ocsf import OcsfSettings
from auditstream.formats.settings import NormalizeSettings
from auditstream.sdm.apiclock import RESET_WINDOW_NS
from auditstream.sdm.registry import NANOS_PER_SECOND, select_streams
from auditstream.settings_base import Duration, StrictModel
from auditstream.sinks.registry import SinkSettings

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
DEFAULT_ENDPOINT = "app.strongdm.com:443"


class ConfigError(Exception):
    """Bad configuration or usage: the CLI prints it and exits 2."""


MOMENT_FORMS = "2024-05-01 (midnight UTC) or 2024-05-01T12:00:00Z"
"""The one vocabulary of times: ``[streams] start_at``, ``backfill --from/--to``, their
errors, ``--help`` and the README all say it this way. ``now`` is accepted wherever a
message suggests it (``start_at``, ``--to``) and suggested nowhere else (``--from``)."""


def moment_hint(now_allowed: bool) -> str:
    """What a time may be written as: ``now, 2024-05-01 ... or ...`` when ``now`` is accepted."""
    return f"now, {MOMENT_FORMS}" if now_allowed else MOMENT_FORMS


def parse_moment(value: object, *, now_allowed: bool = True) -> dt.datetime | None:
    """``now`` (None, when allowed), a ``YYYY-MM-DD`` date (midnight UTC) or an RFC 3339 time
    (UTC unless it carries an offset). Errors say which forms are accepted here."""
    if value is None or (value == "now" and now_allowed):
        return None
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, dt.date):
        moment = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{value!r} is not a date or time; use {moment_hint(now_allowed)}") from None
    else:
        raise ValueError(f"expected a date or time: {moment_hint(now_allowed)}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def parse_start_at(value: object) -> dt.datetime | None:
    """``[streams] start_at``: ``now`` (None), a date or a time (:func:`parse_moment`)."""
    return parse_moment(value, now_allowed=True)


def format_moment(moment: dt.datetime) -> str:
    """A time as this program writes it back: ``2024-05-01T12:00:00Z``."""
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


# A start_at this far ahead of the host's clock is refused; less is a clock a little behind.
START_AT_AHEAD_TOLERANCE = dt.timedelta(minutes=10)


class SourceSettings(StrictModel):
    file_fields = frozenset({"access_key"})

    endpoint: str = DEFAULT_ENDPOINT
    access_key: str = Field(min_length=1)
    secret_key: SecretStr
    insecure: bool = False
    ca_file: Path | None = None
    page_size: int = Field(default=500, ge=1, le=10_000)
    timeout: Duration = Field(default=30.0, gt=0)
    max_transient_retries: int = Field(default=6, ge=0)
    max_rate_limit_wait: Duration = 300.0
    # This process's share of the key's 5,000 reads a minute (shared with the customer's own
    # automation); live work goes first when it is tight (sdm.budget).
    calls_per_minute: int = Field(default=2500, ge=10, le=150_000)

    @field_validator("endpoint")
    @classmethod
    def _host_port(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+:\d{1,5}", value):
            raise ValueError(f"{value!r} is not HOST:PORT (e.g. {DEFAULT_ENDPOINT!r})")
        return value

    @field_validator("secret_key")
    @classmethod
    def _base64_secret(cls, value: SecretStr) -> SecretStr:
        from auditstream.sdm.signing import decode_secret

        decode_secret(value.get_secret_value())
        return value


class StreamSettings(StrictModel):
    include: list[str] = Field(
        default_factory=lambda: ["activities", "queries", "*_history", "managed_secret_logs"]
    )
    exclude: list[str] = Field(default_factory=list)
    poll_interval: Duration = 30.0
    overlap: Duration = 300.0
    tail: Duration = 10.0
    settle: Duration = 0.0
    slice: Duration = 0.0
    start_at: dt.datetime | None = None
    long_query_recheck: Duration = 60.0
    long_query_horizon: Duration = 86400.0
    long_query_max_open: int = Field(default=10_000, ge=1)

    @field_validator("start_at", mode="before")
    @classmethod
    def _start_at(cls, value: object) -> dt.datetime | None:
        moment = parse_start_at(value)
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        if moment is not None and moment > now + START_AT_AHEAD_TOLERANCE:
            raise ValueError(
                f"{format_moment(moment)} is in the future (this host's clock reads {format_moment(now)}): "
                'every record until then would be skipped; use "now" or a past time'
            )
        return moment

    @field_validator("include", "exclude")
    @classmethod
    def _known_streams(cls, patterns: list[str]) -> list[str]:
        select_streams(patterns)
        return patterns

    @field_validator("poll_interval")
    @classmethod
    def _positive_poll_interval(cls, value: float) -> float:
        if value <= 0:
            raise ValueError(
                'must be more than 0 (e.g. "30s"): 0 would list every stream as often as '
                "[source] calls_per_minute allows, spending the key on empty pages"
            )
        return value

    @field_validator("slice")
    @classmethod
    def _positive_slice(cls, value: float) -> float:
        if 0 < value < 1:
            raise ValueError("slice must be at least 1s, or 0 for no limit")
        return value

    @model_validator(mode="after")
    def _some_stream(self) -> StreamSettings:
        if not self.stream_names():
            raise ValueError(
                f"include {self.include} minus exclude {self.exclude} selects no stream; "
                'include at least one (e.g. ["activities", "queries", "*_history"])'
            )
        return self

    def clock_bound_risk(self) -> str | None:
        """What an ``overlap`` too short for the API's clock bound risks, or None.

        A stream whose records are stamped by a clock running ahead of the API's (a gateway's)
        may have its windows end up to a rate-limit window past the API's now (sdm.apiclock:
        record times are held to ``reset_at``, which may lie that far ahead). On-time records
        stamped in that span reach the sink through the sweep, which comes ``overlap`` after
        the window's end: an overlap shorter than the span lists them before they exist.
        Said, not refused: it takes a clock running ahead to matter, and short overlaps are
        what tests and demos use to see sweeps at work.
        """
        bound = RESET_WINDOW_NS / NANOS_PER_SECOND
        if self.overlap >= bound:
            return None
        return (
            f"overlap {self.overlap:g}s is below the API's clock bound ({bound:g}s): if a gateway's "
            f"clock runs ahead, windows of its stream may run up to {bound:g}s past the API's clock, "
            f"and records stamped in that span would be lost instead of delivered late by the sweep; "
            f"set [streams] overlap to at least {bound:g}s plus the latest a record becomes visible"
        )

    def stream_names(self) -> list[str]:
        excluded = {spec.name for spec in select_streams(self.exclude)} if self.exclude else set()
        return [spec.name for spec in select_streams(self.include) if spec.name not in excluded]


class CheckpointSettings(StrictModel):
    path: Path = Path("/var/lib/auditstream/checkpoints.db")
    # Acknowledged batches are committed together at most this often (0: each batch before
    # the next is taken). A crash re-sends at most this much, and loses nothing; a commit per
    # batch of 50 records wrote 380 bytes a record at 1,000 records/s (engine.checkpoint).
    commit_interval: Duration = 1.0


class MetricsSettings(StrictModel):
    listen: str | None = "127.0.0.1:9464"
    max_lag: Duration = 600.0
    # After a fatal error, keep /metrics and /readyz up this long so Prometheus scrapes why.
    linger_after_error: Duration = 30.0

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not re.fullmatch(r"[A-Za-z0-9.\-\[\]:]*:\d{1,5}", value):
            raise ValueError(f'{value!r} is not HOST:PORT (e.g. "0.0.0.0:9464")')
        return value


DEFAULT_BUFFER_BYTES = 2_000_000
"""Of pages held ahead of delivery, at their size on the wire. The 8-day backfill of 28
streams of bench/bench_api.py peaks at 131-134 MB of RSS with it, 143-148 MB with 4 MB (the
target is 150 MB), and was no slower in our runs (its CPU, not the buffer, sets the pace)."""


class EngineSettings(StrictModel):
    queue_batches: int = Field(default=4, ge=1)
    # While streams catch up (backfill, after downtime): windows listed concurrently beyond
    # one per stream, over all streams, so API latency overlaps (engine.prefetch).
    slices_ahead: int = Field(default=16, ge=0, le=64)
    # Bytes of listed pages held ahead of delivery (their size on the wire), over all streams
    # (engine.prefetch.BufferBudget).
    buffer_bytes: int = Field(default=DEFAULT_BUFFER_BYTES, ge=0)
    shutdown_timeout: Duration = 20.0
    sink_failure_pause: Duration = 30.0


class LoggingSettings(StrictModel):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class AppConfig(StrictModel):
    source: SourceSettings
    streams: StreamSettings = Field(default_factory=StreamSettings)
    checkpoint: CheckpointSettings = Field(default_factory=CheckpointSettings)
    sinks: list[SinkSettings] = Field(min_length=1)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    normalize: NormalizeSettings = Field(default_factory=NormalizeSettings)
    cef: CefSettings = Field(default_factory=CefSettings)
    ocsf: OcsfSettings = Field(default_factory=OcsfSettings)

    def encoder_settings(self) -> EncoderSettings:
        """What every sink's encoder reads: ``[cef]`` and ``[ocsf]``."""
        return EncoderSettings(cef=self.cef, ocsf=self.ocsf)

    @model_validator(mode="after")
    def _unique_sink_names(self) -> AppConfig:
        seen: set[str] = set()
        for sink in self.sinks:
            if sink.name in seen:
                raise ValueError(f"two sinks are named {sink.name!r}; sink names must be unique")
            seen.add(sink.name)
        return self

    @model_validator(mode="after")
    def _one_sink_per_file(self) -> AppConfig:
        """Two sinks appending to one file would write every event twice into it, and rotate
        it from under each other."""
        owners: dict[Path, str] = {}
        for index, sink in enumerate(self.sinks):
            for key, (path, _) in sink.written_files().items():
                here = f"sinks[{index}].{key} ({sink.name})"
                resolved = path.expanduser().resolve()  # .. and symbolic links too
                if resolved in owners:
                    raise ValueError(
                        f"{here}: {path} is also {owners[resolved]}; give each sink a file of its own"
                    )
                owners[resolved] = here
        return self


def interpolate_env(value: Any, env: dict[str, str], source: str = "config") -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string, recursively.

    Every unset variable is reported at once, one line each naming ``source`` (the file),
    the key and the variable: an operator fixing them one start at a time loses a restart
    (and, under systemd, a restart delay) per variable.
    """
    unset: list[str] = []
    expanded = _interpolate(value, env, "", unset)
    if unset:
        raise ConfigError("\n".join(f"{source}: {line}" for line in unset))
    return expanded


def _interpolate(value: Any, env: dict[str, str], path: str, unset: list[str]) -> Any:
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            unset.append(
                f"{path or 'config'}: environment variable {name} is not set (referenced as ${{{name}}}); "
                f"set it where the daemon runs (systemd: Environment=, Kubernetes: env), or write "
                f"${{{name}:-default}}"
            )
            return match.group(0)

        return _ENV_REF.sub(substitute, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, env, f"{path}.{k}" if path else k, unset) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, f"{path}[{i}]", unset) for i, v in enumerate(value)]
    return value


def _location(loc: tuple[int | str, ...], data: Any) -> str:
    """``("sinks", 1, "http", "url")`` -> ``sinks[1].url`` (drops union tags)."""
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
            node = node[item] if isinstance(node, list) and item < len(node) else None
            continue
        if isinstance(node, dict) and parts and parts[-1].startswith("[") and item == node.get("type"):
            continue  # discriminated-union tag such as "http", not a key of the document
        parts.append(f".{item}" if parts else item)
        node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts) or "config"


def format_validation_error(error: ValidationError, data: Any, source: str) -> str:
    lines = []
    for item in error.errors(include_url=False, include_input=False):
        where = _location(tuple(item["loc"]), data)
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling against config/auditstream.example.toml)"
        elif item["type"] == "missing":
            message = "required key is missing"
        lines.append(f"{source}: {where}: {message}")
    return "\n".join(lines)


def parse_config(
    data: dict[str, Any], source: str = "config", env: dict[str, str] | None = None
) -> AppConfig:
    expanded = interpolate_env(data, dict(os.environ) if env is None else env, source)
    try:
        return AppConfig.model_validate(expanded)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, expanded, source)) from None


def load_config(path: Path, env: dict[str, str] | None = None) -> AppConfig:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, str(path), env)
