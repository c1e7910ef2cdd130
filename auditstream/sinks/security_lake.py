"""Amazon Security Lake custom sources: Parquet objects of OCSF events, one source per class.

Security Lake takes third-party data as *custom sources*, one per OCSF event class: each has
a provider location (``s3://aws-security-data-lake-<region>-<hash>/ext/<source>/``), a
provider role to write there (assumed with an external ID), a Glue crawler and a table. Its
requirements and best practices for the objects, each kept here:

* **Layout.** ``<location>/region=<region>/accountId=<account_id>/eventDay=YYYYMMDD/``, the
  day of the event's OCSF ``time`` (UTC), so the crawler's partitions and ``time`` agree.
* **One class per object**, and the object under that class's source.
* **Parquet**, zstd, data pages of at most 1 MiB, rows sorted by ``time`` (declared in the
  file's sorting columns; with the column statistics, a time filter skips what it excludes).
* **A fixed Arrow schema per class** (:data:`COLUMNS`): every attribute the OCSF encoder can
  emit for the class, nested objects as structs, arrays as lists; ``entity.data`` (OCSF
  ``json_t``) as JSON text; ``unmapped`` as ``map<string, string>`` (Security Lake's own
  tables type it so), a string value as it is and any other value as its JSON. Never an
  inferred schema: an inferred one changes when an attribute first appears, and the crawler
  then sees two schemas for one table. ``tests/sinks/test_security_lake.py`` checks the
  schema against the OCSF releases' own exports and round-trips every event the encoder
  makes for every stream and verb through it; a row that does not fit (an attribute added to
  the encoder but not here) is dead-lettered with the reason, never written with the
  attribute silently dropped.

Buffering and acknowledgement. The delivery machinery (:class:`~auditstream.sinks.delivery.
DeliverySink`) holds records up to ``flush_interval`` (its ``batch.max_age``) or until
``batch.max_events`` / ``batch.max_bytes`` are reached, so objects gather minutes of events
as Security Lake asks (objects every 5 minutes to a day, more often only when large); and a
``send()`` returns only when every object holding its records is written, so the engine's
checkpoint never gets ahead of the lake. The engine hands a stream's next batch over only
after this one is acknowledged, so holding a stream that is *behind* (its newest record older
than ``flush_interval``: a backfill, a catch-up after downtime) would slow it to one page per
``flush_interval`` without making any object bigger; such a batch is not held
(:meth:`SecurityLakeSink.send`), and everything buffered goes out with it.

Object names are derived from their records (the source, and a hash of the stream and key of
every record in the object), so a retried upload (an answer lost to a timeout, a part of a
request sent again) writes the same key: overwritten, not duplicated. What names cannot undo:
a daemon killed after some objects of a request were uploaded but before all were and the
checkpoint saved (it moves only once every object of a batch is written) reads those records again
after the restart, batches them with others, and writes them into objects of other names:
at least once, as everywhere: both copies carry the record key as ``metadata.original_event_uid``.

Uploads are the S3 sink's (:class:`~auditstream.sinks.s3.ObjectUploads`): ``PutObject`` up to 8 MiB, a
multipart upload above, ``Content-MD5`` on every part, the same error classification. The
provider role is assumed through STS with ``role_arn`` and ``external_id`` (per source or for
all), from the standard AWS credential chain; the temporary credentials are refreshed before
they expire.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union, cast

import orjson
from pydantic import Field, SecretStr, field_validator, model_validator

from auditstream.formats import Encoding, make_document_encoder
from auditstream.formats.ocsf_rules import (
    API_ACTIVITY,
    ENTITY_MANAGEMENT,
    FALLBACK,
    QUERY_CLASSES,
    VERB_RULES,
)
from auditstream.sdm.registry import STREAMS, StreamKind
from auditstream.settings_base import Duration, StrictModel
from auditstream.sinks.aws import (
    AwsClient,
    AwsRequestError,
    AwsSinkSettings,
    AwsTransport,
    aws_extra_installed,
    describe_code,
)
from auditstream.sinks.base import BatchSettings, Envelope, ProbeResult, SinkFatalError
from auditstream.sinks.delivery import DeliverySink, Record, WriteResult, send_in_parts
from auditstream.sinks.extras import install_hint, installed
from auditstream.sinks.http_client import check_url
from auditstream.sinks.observer import SinkObserver
from auditstream.sinks.retry import TransientError
from auditstream.sinks.s3 import ObjectUploads, s3_client_config

if TYPE_CHECKING:
    import pyarrow as pa

MIB = 1024 * 1024
INSTALL_HINT = install_hint("lake")
PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"
DATA_PAGE_BYTES = MIB  # Security Lake: data pages of at most 1 MiB (uncompressed)
ROW_GROUP_ROWS = 1024 * 1024  # far below Security Lake's 256 MB per row group, at batch.max_bytes
ZSTD_LEVEL = 3
UPLOADS_AT_ONCE = 4  # objects of one request built and uploaded concurrently
ROLE_SESSION_SECONDS = 3600  # the shortest maximum a role can have; refreshed before expiry
MAX_SOURCE_NAME = 20  # Security Lake: AmazonSecurityLake-Provider-<name>-<region> fits 64 characters
CHECK_OBJECT = "auditstream-check"
DEFAULT_FLUSH_INTERVAL = 300.0  # Security Lake: objects every 5 minutes to a day

# -- the schema ----------------------------------------------------------------------------
# Declared in plain Python (pyarrow is imported only when a sink runs) and turned into Arrow
# by :func:`arrow_schema`. A dict is a struct, a one-element list a list of it.

STRING, INT, LONG, BOOL, JSON, MAP = "string", "int", "long", "boolean", "json", "map"
Shape = Union[str, dict[str, "Shape"], list["Shape"]]  # noqa: UP007 (a recursive alias needs Union)

USER: Shape = {"uid": STRING, "uid_alt": STRING, "name": STRING, "email_addr": STRING}
ENDPOINT: Shape = {"uid": STRING, "name": STRING, "hostname": STRING, "ip": STRING, "port": INT}
URL: Shape = {
    "scheme": STRING,
    "hostname": STRING,
    "port": INT,
    "path": STRING,
    "query_string": STRING,
    "url_string": STRING,
}
HTTP_REQUEST: Shape = {"http_method": STRING, "user_agent": STRING, "url": URL}
RESOURCE: Shape = {"uid": STRING, "name": STRING, "type": STRING}
METADATA: Shape = {
    "version": STRING,
    "product": {"name": STRING, "vendor_name": STRING},
    "log_name": STRING,
    "log_version": STRING,
    "original_event_uid": STRING,
    "correlation_uid": STRING,
    "event_code": STRING,
    "profiles": [STRING],
}
# What every event has (ocsf.py's head, time, metadata, actor, message).
BASE: dict[str, Shape] = {
    "class_uid": INT,
    "class_name": STRING,
    "category_uid": INT,
    "category_name": STRING,
    "activity_id": INT,
    "activity_name": STRING,
    "type_uid": LONG,
    "type_name": STRING,
    "time": LONG,
    "severity_id": INT,
    "severity": STRING,
    "status_id": INT,
    "status": STRING,
    "message": STRING,
    "metadata": METADATA,
    "actor": {"user": USER},
}
# Activities (the IAM classes) may carry the address and user agent of the request.
ACTIVITY: dict[str, Shape] = {**BASE, "src_endpoint": ENDPOINT, "http_request": HTTP_REQUEST}
# Queries and replays (the network and application classes): a session between two endpoints.
SESSION: dict[str, Shape] = {
    **BASE,
    "src_endpoint": ENDPOINT,
    "dst_endpoint": ENDPOINT,
    "start_time": LONG,
    "end_time": LONG,
    "duration": LONG,
}
UNMAPPED: dict[str, Shape] = {"unmapped": MAP}

COLUMNS: dict[int, dict[str, Shape]] = {
    3001: {**ACTIVITY, "user": USER, **UNMAPPED},
    3002: {**ACTIVITY, "user": USER, "service": {"name": STRING}, "is_mfa": BOOL, **UNMAPPED},
    3004: {
        **ACTIVITY,
        "entity": {"uid": STRING, "name": STRING, "type": STRING, "type_id": INT, "user": USER, "data": JSON},
        **UNMAPPED,
    },
    3005: {**ACTIVITY, "user": USER, "privileges": [STRING], "resources": [RESOURCE], **UNMAPPED},
    3006: {**ACTIVITY, "user": USER, "group": {"uid": STRING, "name": STRING, "type": STRING}, **UNMAPPED},
    4002: {**SESSION, "http_request": HTTP_REQUEST, **UNMAPPED},
    4005: {**SESSION, "user": USER, **UNMAPPED},
    4007: {**SESSION, **UNMAPPED},
    6003: {
        **SESSION,
        "api": {"operation": STRING, "service": {"name": STRING}, "request": {"uid": STRING}},
        "resources": [RESOURCE],
        "http_request": HTTP_REQUEST,
        **UNMAPPED,
    },
    6005: {
        **SESSION,
        "type_id": INT,
        "database": {"uid": STRING, "name": STRING, "type": STRING, "type_id": INT},
        "query_info": {"uid": STRING, "query_string": STRING},
        **UNMAPPED,
    },
    0: {**BASE, **UNMAPPED},  # Base Event: a stream this build has no mapping for
}
# The config key of each class's source: the class's OCSF name.
CLASS_KEYS: dict[int, str] = {
    3001: "account_change",
    3002: "authentication",
    3004: "entity_management",
    3005: "user_access",
    3006: "group_management",
    4002: "http_activity",
    4005: "rdp_activity",
    4007: "ssh_activity",
    6003: "api_activity",
    6005: "datastore_activity",
    0: "base_event",
}
CLASS_UIDS = {key: uid for uid, key in CLASS_KEYS.items()}


def json_paths(shape: dict[str, Shape], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Where a class has ``json_t`` attributes (written as JSON text): ``[("entity", "data")]``."""
    found: list[tuple[str, ...]] = []
    for name, inner in shape.items():
        if inner == JSON:
            found.append((*prefix, name))
        elif isinstance(inner, dict):
            found.extend(json_paths(inner, (*prefix, name)))
    return found


JSON_PATHS = {uid: json_paths(columns) for uid, columns in COLUMNS.items()}


def classes_of(kind: StreamKind) -> set[int]:
    """The OCSF classes the encoder can give a record of a stream of ``kind`` (ocsf_rules)."""
    if kind is StreamKind.ACTIVITY:
        return {decision.cls.uid for _, decision in VERB_RULES} | {FALLBACK.cls.uid}
    if kind in (StreamKind.QUERY, StreamKind.REPLAY):
        return {cls.uid for cls in QUERY_CLASSES.values()} | {API_ACTIVITY.uid}
    if kind in (StreamKind.HISTORY, StreamKind.SECRET_LOG):
        return {ENTITY_MANAGEMENT.uid}
    return {0}


def lake_extra_installed() -> bool:
    return aws_extra_installed() and installed("pyarrow.parquet") and installed("pyarrow.json")


# -- settings ------------------------------------------------------------------------------

_ROLE_ARN = r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$"


_SOURCE_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.:")


def check_source_name(name: str) -> str:
    """A custom source's name as Security Lake accepts it: 1 to 20 of ``A-Z a-z 0-9 _ - . :``."""
    if not name or len(name) > MAX_SOURCE_NAME:
        raise ValueError(
            f"{name!r} has {len(name)} characters: a custom source's name has 1 to {MAX_SOURCE_NAME} "
            "(its provider role, AmazonSecurityLake-Provider-<name>-<region>, must fit IAM's 64)"
        )
    if not set(name) <= _SOURCE_NAME_CHARACTERS:
        raise ValueError(f"{name!r}: a custom source's name holds only letters, digits and _ - . :")
    return name


def parse_location(location: str) -> tuple[str, str, str]:
    """(bucket, prefix, source name) of a provider location ``s3://<bucket>/ext/<source>/[...]``.

    The prefix is the whole path (a Security Lake that adds a version directory under the
    source's name keeps it)."""
    example = "s3://aws-security-data-lake-us-east-1-abcdef0123456789/ext/sdm_auth/"
    if not location.startswith("s3://"):
        raise ValueError(
            f"{location!r} is not an s3:// location; give the provider location Security Lake "
            f"showed when the custom source was created, e.g. {example}"
        )
    bucket, _, path = location.removeprefix("s3://").partition("/")
    parts = [part for part in path.split("/") if part]
    if not bucket or len(parts) < 2 or parts[0] != "ext":
        raise ValueError(f"{location!r}: a custom source's location is s3://<bucket>/ext/<source name>/")
    return bucket, "/".join(parts), check_source_name(parts[1])


class LakeSource(StrictModel):
    """One custom source: where its objects go, and the provider role that may write there
    when it is not the sink's ``role_arn``.

    ``location`` is the provider location Security Lake gave when the source was created;
    ``name`` alone means ``s3://<bucket>/ext/<name>/``. (In TOML, a plain string is either:
    ``authentication = "sdm_auth"`` or ``authentication = "s3://.../ext/sdm_auth/"``.)"""

    name: str | None = None
    location: str | None = None
    role_arn: str | None = Field(default=None, pattern=_ROLE_ARN)
    external_id: SecretStr | None = Field(default=None, min_length=2, max_length=1224)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return value if value is None else check_source_name(value)

    @field_validator("location")
    @classmethod
    def _location(cls, value: str | None) -> str | None:
        if value is not None:
            parse_location(value)
        return value

    @model_validator(mode="after")
    def _where(self) -> LakeSource:
        if self.name is None and self.location is None:
            raise ValueError("give the source's name or its location (s3://<bucket>/ext/<name>/)")
        if (
            self.name is not None
            and self.location is not None
            and parse_location(self.location)[2] != self.name
        ):
            raise ValueError(f"name {self.name!r} is not the source in location {self.location!r}")
        if self.external_id is not None and self.role_arn is None:
            raise ValueError("external_id goes with role_arn (the provider role it is for)")
        return self


class LakeSources(StrictModel):
    """``[sinks.sources]``: one custom source per OCSF class, keyed by the class's OCSF name.
    Each is a :class:`LakeSource`, or as a plain string its name (``"sdm_auth"``) or its
    provider location (``"s3://.../ext/sdm_auth/"``)."""

    account_change: LakeSource | None = None  # 3001
    authentication: LakeSource | None = None  # 3002
    entity_management: LakeSource | None = None  # 3004
    user_access: LakeSource | None = None  # 3005
    group_management: LakeSource | None = None  # 3006
    http_activity: LakeSource | None = None  # 4002
    rdp_activity: LakeSource | None = None  # 4005
    ssh_activity: LakeSource | None = None  # 4007
    api_activity: LakeSource | None = None  # 6003
    datastore_activity: LakeSource | None = None  # 6005
    base_event: LakeSource | None = None  # 0: streams a later StrongDM adds before auditstream maps them

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        return {
            key: ({"location": value} if value.startswith("s3://") else {"name": value})
            if isinstance(value, str)
            else value
            for key, value in data.items()
        }

    def configured(self) -> dict[str, LakeSource]:
        return {key: source for key, source in self if source is not None}


class SecurityLakeBatchSettings(BatchSettings):
    """The size cap of a flush: the buffer goes out once it holds 500,000 records or 64 MiB of
    OCSF JSON (what it costs in memory; the Parquet objects are several times smaller).
    ``max_age`` is ``flush_interval``, set from it."""

    max_events: int = Field(default=500_000, ge=1)
    max_bytes: int = Field(default=64 * MIB, ge=1024)


class SecurityLakeSinkSettings(AwsSinkSettings):
    type: Literal["security_lake"] = "security_lake"
    format: Literal["ocsf"] = "ocsf"
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d+$")
    account_id: str = Field(pattern=r"^\d{12}$")
    bucket: str | None = Field(default=None, min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]+$")
    sources: LakeSources
    role_arn: str | None = Field(default=None, pattern=_ROLE_ARN)
    external_id: SecretStr | None = Field(default=None, min_length=2, max_length=1224)
    sts_endpoint_url: str | None = None
    force_path_style: bool = False
    flush_interval: Duration = DEFAULT_FLUSH_INTERVAL
    batch: SecurityLakeBatchSettings = Field(default_factory=SecurityLakeBatchSettings)

    @model_validator(mode="before")
    @classmethod
    def _prepare(cls, data: Any) -> Any:
        if not lake_extra_installed():
            raise ValueError(f"the security_lake sink needs pyarrow and aiobotocore: {INSTALL_HINT}")
        if not isinstance(data, dict):
            return data
        data = dict(data)
        batch = data.get("batch") or {}
        if isinstance(batch, BatchSettings):
            batch = {name: getattr(batch, name) for name in batch.model_fields_set}
        if isinstance(batch, dict):
            if "max_age" in batch:
                raise ValueError(
                    "batch.max_age: this sink holds records up to flush_interval; set that instead"
                )
            data["batch"] = {**batch, "max_age": data.get("flush_interval", DEFAULT_FLUSH_INTERVAL)}
        return data

    @field_validator("sts_endpoint_url")
    @classmethod
    def _sts_endpoint(cls, value: str | None) -> str | None:
        return value if value is None else check_url(value)

    @model_validator(mode="after")
    def _every_class_has_a_source(self) -> SecurityLakeSinkSettings:
        if self.external_id is not None and self.role_arn is None:
            raise ValueError("external_id goes with role_arn (the provider role it is for)")
        configured = self.sources.configured()
        for key, source in configured.items():
            if source.location is None and self.bucket is None:
                raise ValueError(
                    f"sources.{key}: give its location (s3://<bucket>/ext/{source.name}/), or set bucket"
                )
        needed: dict[int, list[str]] = {}
        for spec in STREAMS.values():
            if self.routes(spec.name):
                for uid in classes_of(spec.kind):
                    needed.setdefault(uid, []).append(spec.name)
        missing = [uid for uid in sorted(needed) if CLASS_KEYS[uid] not in configured]
        if missing:
            listed = "; ".join(
                f"sources.{CLASS_KEYS[uid]} (OCSF class {uid}, records of {_few(needed[uid])})"
                for uid in missing
            )
            raise ValueError(
                f"no custom source for {listed}: Security Lake takes one custom source per OCSF class; "
                "create them (docs/sinks.md, security_lake) and name each here, or narrow streams"
            )
        return self


def _few(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


@dataclass(frozen=True)
class Source:
    """A configured custom source, resolved: its class, bucket, prefix and provider role."""

    key: str
    class_uid: int
    name: str
    bucket: str
    prefix: str  # ext/<name>[/...], no slash at either end
    role_arn: str | None
    external_id: str | None
    role_keys: str  # the config keys that set the role, for messages

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}/"


def resolve_sources(settings: SecurityLakeSinkSettings) -> dict[int, Source]:
    resolved: dict[int, Source] = {}
    for key, source in settings.sources.configured().items():
        if source.location is not None:
            bucket, prefix, name = parse_location(source.location)
        else:
            assert source.name is not None and settings.bucket is not None  # the settings checked it
            bucket, prefix, name = settings.bucket, f"ext/{source.name}", source.name
        own = source.role_arn is not None
        role_arn = source.role_arn if own else settings.role_arn
        external = source.external_id if own else settings.external_id
        resolved[CLASS_UIDS[key]] = Source(
            key=key,
            class_uid=CLASS_UIDS[key],
            name=name,
            bucket=bucket,
            prefix=prefix,
            role_arn=role_arn,
            external_id=external.get_secret_value() if external is not None else None,
            role_keys=f"sources.{key}.role_arn and .external_id" if own else "role_arn and external_id",
        )
    return resolved


# -- rows ----------------------------------------------------------------------------------


class OcsfRow(bytes):
    """One record's row: its OCSF event as JSON, shaped for the class's Arrow schema.

    The delivery machinery carries bytes per record (they count against ``batch.max_bytes``
    and are what a dead-letter file keeps); the class and time ride along on them, so
    records are grouped into objects without parsing anything again."""

    class_uid: int
    time_ms: int


def _value_text(value: Any) -> str | None:
    """An ``unmapped`` value as the map holds it: a string as it is, anything else as JSON."""
    if type(value) is str or value is None:
        return value
    return orjson.dumps(value).decode()


def _with_json_text(node: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    """``node`` with the value at ``path`` written as JSON text; dicts on the way are copied
    (the encoder shares constant parts between events)."""
    head, rest = path[0], path[1:]
    inner = node.get(head)
    if inner is None:
        return node
    if rest:
        if type(inner) is not dict:
            return node
        return {**node, head: _with_json_text(inner, rest)}
    return {**node, head: orjson.dumps(inner).decode()}


def row_of(document: dict[str, Any]) -> OcsfRow:
    """The row of an OCSF event: ``unmapped`` as key/value pairs (read as a map), ``json_t``
    attributes as JSON text, everything else as the encoder made it."""
    uid = document.get("class_uid")
    row = dict(document)
    unmapped = row.get("unmapped")
    if type(unmapped) is dict:
        row["unmapped"] = [{"key": key, "value": _value_text(value)} for key, value in unmapped.items()]
    for path in JSON_PATHS.get(uid, ()) if type(uid) is int else ():
        row = _with_json_text(row, path)
    payload = OcsfRow(orjson.dumps(row))
    payload.class_uid = uid if type(uid) is int else -1
    time_ms = document.get("time")
    payload.time_ms = time_ms if type(time_ms) is int else 0
    return payload


@functools.lru_cache(maxsize=4096)
def event_day(day_number: int) -> str:
    """``YYYYMMDD`` of a UTC day counted from the epoch (rows are grouped by ``time // DAY_MS``)."""
    return (dt.date(1970, 1, 1) + dt.timedelta(days=day_number)).strftime("%Y%m%d")


DAY_MS = 86_400_000


# -- Parquet -------------------------------------------------------------------------------


def _arrow_type(shape: Shape, *, for_json: bool) -> pa.DataType:
    import pyarrow as pa

    if isinstance(shape, dict):
        return pa.struct(
            [pa.field(name, _arrow_type(inner, for_json=for_json)) for name, inner in shape.items()]
        )
    if isinstance(shape, list):
        return pa.list_(_arrow_type(shape[0], for_json=for_json))
    if shape == MAP:
        if for_json:  # pyarrow's JSON reader has no maps: key/value pairs, then viewed as a map
            return pa.list_(pa.struct([pa.field("key", pa.string(), nullable=False), ("value", pa.string())]))
        return pa.map_(pa.string(), pa.string())
    types = {STRING: pa.string(), JSON: pa.string(), INT: pa.int32(), LONG: pa.int64(), BOOL: pa.bool_()}
    return types[shape]


@functools.cache
def arrow_schema(class_uid: int, *, for_json: bool = False) -> pa.Schema:
    """The Parquet schema of a class's objects (``for_json``: the schema rows are read with)."""
    import pyarrow as pa

    columns = COLUMNS[class_uid]
    return pa.schema(
        [pa.field(name, _arrow_type(shape, for_json=for_json)) for name, shape in columns.items()]
    )


def unknown_attributes(value: Any, shape: Shape, path: str = "") -> list[str]:
    """Attributes of ``value`` the schema has no column for (to say why a row was refused)."""
    found: list[str] = []
    if isinstance(shape, dict) and isinstance(value, dict):
        for name, inner in value.items():
            where = f"{path}.{name}" if path else name
            if name not in shape:
                found.append(where)
            elif shape[name] not in (MAP, JSON):
                found.extend(unknown_attributes(inner, shape[name], where))
    elif isinstance(shape, list) and isinstance(value, list):
        for item in value:
            found.extend(unknown_attributes(item, shape[0], f"{path}[]"))
    return found


def _read_rows(class_uid: int, rows: Sequence[bytes]) -> pa.Table:
    import pyarrow as pa
    import pyarrow.json as pj

    if not rows:
        return arrow_schema(class_uid, for_json=True).empty_table()
    block = max(MIB, max(len(row) for row in rows) + 1)  # a row may not straddle two blocks
    return pj.read_json(
        pa.BufferReader(b"\n".join(rows)),
        read_options=pj.ReadOptions(block_size=block),
        parse_options=pj.ParseOptions(
            explicit_schema=arrow_schema(class_uid, for_json=True), unexpected_field_behavior="error"
        ),
    )


@dataclass
class Built:
    """One object: its Parquet bytes, which of the rows it holds, which it refused and why."""

    body: bytes
    written: list[int]
    rejected: dict[int, str]
    first_ms: int


def build_object(class_uid: int, rows: Sequence[OcsfRow]) -> Built:
    """The Parquet object of ``rows`` (one class), sorted by time (stable: equal times keep
    their order; sorted as rows, before parsing, which costs a quarter of what sorting the
    parsed table would), zstd. Rows that do not fit the schema are left out with the reason,
    so the others are not held back by them."""
    import pyarrow as pa
    import pyarrow.compute as pc

    order = sorted(range(len(rows)), key=lambda index: rows[index].time_ms)
    written = order
    rejected: dict[int, str] = {}
    try:
        table = _read_rows(class_uid, [rows[index] for index in order])
    except pa.ArrowInvalid:
        written = []
        for index in order:
            try:
                _read_rows(class_uid, [rows[index]])
            except pa.ArrowInvalid as exc:
                rejected[index] = _refusal(class_uid, rows[index], exc)
            else:
                written.append(index)
        table = _read_rows(class_uid, [rows[index] for index in written])
    table = _as_stored(class_uid, table)
    first = pc.min(table.column("time")).as_py() if table.num_rows else None
    return Built(_parquet(table), sorted(written), rejected, first if type(first) is int else 0)


def _refusal(class_uid: int, row: bytes, exc: Exception) -> str:
    try:
        unknown = unknown_attributes(orjson.loads(bytes(row)), COLUMNS[class_uid])
    except orjson.JSONDecodeError:
        unknown = []
    what = f"attributes with no column: {', '.join(unknown)}" if unknown else str(exc)
    return (
        f"does not fit the Parquet schema of OCSF class {class_uid} ({CLASS_KEYS[class_uid]}) "
        f"in the security_lake sink ({what})"
    )


def _as_stored(class_uid: int, table: pa.Table) -> pa.Table:
    """The rows as the object stores them: columns in schema order, key/value pairs as maps."""
    import pyarrow as pa

    schema = arrow_schema(class_uid)
    columns = []
    for field in schema:
        column = table.column(field.name)
        if pa.types.is_map(field.type):
            column = pa.chunked_array([chunk.view(field.type) for chunk in column.chunks], type=field.type)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)


def _parquet(table: pa.Table) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = pa.BufferOutputStream()
    pq.write_table(
        table,
        out,
        compression="zstd",
        compression_level=ZSTD_LEVEL,
        data_page_size=DATA_PAGE_BYTES,
        row_group_size=ROW_GROUP_ROWS,
        sorting_columns=[pq.SortingColumn(table.schema.get_field_index("time"))],
    )
    return bytes(out.getvalue().to_pybytes())


def empty_object(class_uid: int) -> bytes:
    """A Parquet object of the class's schema and no rows (``probe()`` writes it)."""
    return _parquet(_as_stored(class_uid, arrow_schema(class_uid, for_json=True).empty_table()))


# -- AWS -----------------------------------------------------------------------------------


class AssumedRoleClient(AwsClient):
    """An :class:`AwsClient` whose credentials are a provider role's: assumed through STS (with
    the external ID Security Lake's provider role requires) from the standard chain's
    credentials, and refreshed before they expire. Everything else is AwsClient's.

    botocore refreshes the credentials itself when they are due (15 minutes before they
    expire), inside a request's signing; a failure there would surface as the S3 call's
    failure ("unexpected SinkFatalError" for PutObject, a throttled STS made fatal) with
    botocore's traceback in the log. So the role is assumed *before* each call that needs it,
    here, where an STS failure keeps its own classification (throttling and 5xx retried, a
    refusal fatal and naming ``role_arn``); botocore's refresh then takes what was fetched."""

    def __init__(
        self,
        service: str,
        settings: AwsSinkSettings,
        config: dict[str, Any],
        *,
        source: Source,
        sts: AwsClient,
        session_name: str,
    ) -> None:
        super().__init__(service, settings, config)
        assert source.role_arn is not None
        self.role_arn = source.role_arn
        self._external_id = source.external_id
        self._role_keys = source.role_keys
        self._sts = sts
        self._session_name = session_name[:64]
        self._credentials: Any = None
        self._fetched: dict[str, Any] | None = None
        self._assuming = asyncio.Lock()

    async def _session(self) -> Any:
        from aiobotocore.credentials import AioDeferredRefreshableCredentials

        session = await super()._session()
        self._credentials = AioDeferredRefreshableCredentials(
            refresh_using=self._hand_over, method="assume-role"
        )
        # aiobotocore has no public setter for refreshable credentials: this is the attribute
        # its own set_credentials() and credential chain fill.
        session._credentials = self._credentials
        return session

    async def call(self, operation: str, what: str, *, hint: str = "", **params: Any) -> dict[str, Any]:
        await self._get()
        if self._credentials.refresh_needed():
            async with self._assuming:
                if self._credentials.refresh_needed() and self._fetched is None:
                    self._fetched = await self._assume()
            await self._credentials.get_frozen_credentials()
        return await super().call(operation, what, hint=hint, **params)

    async def _hand_over(self) -> dict[str, Any]:
        """botocore's refresh: the credentials :meth:`call` just fetched (assumed here only if a
        refresh fell due between the two, inside a long multipart upload)."""
        fetched, self._fetched = self._fetched, None
        return fetched if fetched is not None else await self._assume()

    async def _assume(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "RoleArn": self.role_arn,
            "RoleSessionName": self._session_name,
            "DurationSeconds": ROLE_SESSION_SECONDS,
        }
        if self._external_id is not None:
            params["ExternalId"] = self._external_id
        try:
            answer = await self._sts.call("AssumeRole", self.role_arn, **params)
        except (SinkFatalError, AwsRequestError) as exc:
            raise SinkFatalError(
                f"{exc}; check {self._role_keys} (the provider role Security Lake made for the custom "
                "source, and the external ID given when it was created), and that the role trusts this "
                "principal (the account given as the source's provider identity)"
            ) from None
        credentials = answer["Credentials"]
        return {
            "access_key": credentials["AccessKeyId"],
            "secret_key": credentials["SecretAccessKey"],
            "token": credentials["SessionToken"],
            "expiry_time": credentials["Expiration"].isoformat(),
        }

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            await self._sts.close()


@dataclass(frozen=True)
class SourceUploads:
    """One custom source and the uploads into its location, with its provider role's client."""

    source: Source
    objects: ObjectUploads

    @classmethod
    def of(cls, source: Source, client: AwsClient) -> SourceUploads:
        return cls(
            source, ObjectUploads(client, source.bucket, {"ContentType": PARQUET_CONTENT_TYPE}, _explain)
        )

    async def upload(self, key: str, body: bytes) -> None:
        """A fatal error names the source's key: a provider role may write under its own
        source's prefix only, so a wrong location or role shows as a refusal here."""
        try:
            await self.objects.upload(key, body)
        except SinkFatalError as exc:
            raise SinkFatalError(f"{exc} (sources.{self.source.key}, {self.source.location})") from None


def _explain(exc: AwsRequestError, where: str) -> str:
    return (
        f"{exc.operation} {where}: {describe_code(exc.code, exc.status)}: {exc.message}; check the "
        "custom source's location and region (the data lake's bucket is in the region it was made for)"
    )


class SecurityLakeTransport:
    """Objects per (source, eventDay) of each request, built in a thread and uploaded
    concurrently; the records whose class has no source (a stream this build does not map:
    Base Event) are dead-lettered with the key to add."""

    max_in_flight = AwsTransport.max_in_flight

    def __init__(self, settings: SecurityLakeSinkSettings, encoding: Encoding = None) -> None:
        self.settings = settings
        self._document = make_document_encoder("ocsf", encoding)
        self.sources = resolve_sources(settings)
        clients: dict[tuple[str | None, str | None], AwsClient] = {}
        self.uploads: dict[int, SourceUploads] = {}
        for uid, source in self.sources.items():
            role = (source.role_arn, source.external_id)
            if role not in clients:
                clients[role] = self._client(source)
            self.uploads[uid] = SourceUploads.of(source, clients[role])
        self.clients = list(clients.values())

    def _client(self, source: Source) -> AwsClient:
        config = s3_client_config(self.settings.force_path_style)
        if source.role_arn is None:
            return AwsClient("s3", self.settings, config)
        sts = AwsClient(
            "sts", self.settings.model_copy(update={"endpoint_url": self.settings.sts_endpoint_url})
        )
        return AssumedRoleClient(
            "s3",
            self.settings,
            config,
            source=source,
            sts=sts,
            session_name=f"auditstream-{self.settings.name}",
        )

    def encode(self, envelope: Envelope) -> bytes:
        return row_of(self._document(envelope.event))

    async def open(self) -> None:
        return None

    def object_key(self, source: Source, day: str, records: Iterable[Record], first_ms: int) -> str:
        """Where an object goes: the same records (in whatever order they were coalesced)
        always get the same name, so a retried upload overwrites it."""
        digest = hashlib.sha256(source.name.encode())
        for ident in sorted(f"{r.envelope.stream}\n{r.envelope.key}" for r in records):
            digest.update(b"\0" + ident.encode())
        first = dt.datetime.fromtimestamp(first_ms / 1000, dt.UTC)
        partition = f"region={self.settings.region}/accountId={self.settings.account_id}/eventDay={day}"
        return f"{source.prefix}/{partition}/{first:%Y%m%dT%H%M%SZ}-{digest.hexdigest()[:24]}.parquet"

    async def write(self, records: Sequence[Record]) -> WriteResult:
        groups: dict[tuple[int, int], list[int]] = {}
        unplaced: dict[int, str] = {}
        for index, record in enumerate(records):
            row = cast(OcsfRow, record.payload)
            if row.class_uid not in self.uploads:
                unplaced[index] = self._no_source(row.class_uid)
            else:
                groups.setdefault((row.class_uid, row.time_ms // DAY_MS), []).append(index)

        async def upload(indexes: Sequence[int]) -> WriteResult:
            rows = [cast(OcsfRow, records[i].payload) for i in indexes]
            head = rows[0]
            built = await asyncio.to_thread(build_object, head.class_uid, rows)
            result = WriteResult(rejected={indexes[i]: reason for i, reason in built.rejected.items()})
            if built.written:
                uploads = self.uploads[head.class_uid]
                written = [records[indexes[i]] for i in built.written]
                key = self.object_key(
                    uploads.source, event_day(head.time_ms // DAY_MS), written, built.first_ms
                )
                await uploads.upload(key, built.body)
            return result

        result = await send_in_parts(list(groups.values()), upload, UPLOADS_AT_ONCE)
        result.rejected.update(unplaced)
        return result

    @staticmethod
    def _no_source(class_uid: int) -> str:
        key = CLASS_KEYS.get(class_uid)
        if key is None:
            return f"OCSF class {class_uid} has no Parquet schema in the security_lake sink"
        return f"no custom source for OCSF class {class_uid}: add sources.{key} to the security_lake sink"

    async def probe(self) -> ProbeResult:
        """Assume each provider role and write, under each source's partition of today, an
        object of the class's schema with no rows (``auditstream-check-<sink>.parquet``,
        overwritten by every check): the permissions and path a delivery needs are tried,
        and the crawler sees nothing but the table's own schema."""
        today = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
        partition = f"region={self.settings.region}/accountId={self.settings.account_id}/eventDay={today}"

        async def check(uid: int, uploads: SourceUploads) -> str | None:
            key = f"{uploads.source.prefix}/{partition}/{CHECK_OBJECT}-{self.settings.name}.parquet"
            try:
                await uploads.upload(key, await asyncio.to_thread(empty_object, uid))
            except TransientError as exc:
                return f"sources.{uploads.source.key}: {exc}"
            except SinkFatalError as exc:
                return str(exc)
            return None

        problems = [p for p in await asyncio.gather(*(check(u, up) for u, up in self.uploads.items())) if p]
        if problems:
            return ProbeResult(False, "; ".join(problems))
        return ProbeResult(
            True,
            f"{len(self.uploads)} custom sources writable (an empty {CHECK_OBJECT}-{self.settings.name}"
            f".parquet written under eventDay={today} of each)",
        )

    async def close(self) -> None:
        for client in self.clients:
            await client.close()


class SecurityLakeSink(DeliverySink):
    """The delivery machinery with the transport above, holding records up to
    ``flush_interval`` unless their stream is behind."""

    def __init__(
        self,
        settings: SecurityLakeSinkSettings,
        encoding: Encoding = None,
        *,
        state_dir: Path = Path("."),
        observer: SinkObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], int] = time.time_ns,
    ) -> None:
        super().__init__(
            settings,
            SecurityLakeTransport(settings, encoding),
            state_dir=state_dir,
            observer=observer,
            clock=clock,
        )
        self._hold_ns = round(settings.flush_interval * 1_000_000_000)
        self._wall_clock = wall_clock

    async def send(self, batch: Sequence[Envelope]) -> None:
        """Held up to ``flush_interval`` like any batch, unless its newest record is older
        than that: its stream is behind (a backfill, a catch-up), its next batch is already
        waiting in the engine, and holding this one would only slow the stream to a batch per
        ``flush_interval``. Then everything buffered goes out now (as ``flush()`` does), and
        the objects still gather whatever the other streams hand over meanwhile."""
        if not batch or self._wall_clock() - max(e.time_ns for e in batch) <= self._hold_ns:
            await super().send(batch)
        else:
            await self.send_now(batch)
