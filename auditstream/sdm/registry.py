"""The one description of every audit stream auditstream can poll.

Built by introspecting the installed ``strongdm`` SDK's generated protobuf modules and
service descriptors, so a new SDK release that adds a ``*History`` service shows up here
without anyone typing message names (which are irregular: ``PoliciesHistoryListRequest``,
``OrganizationHistoryRecord``, ``WorkflowApproversHistoryListRequest``...).
"""

from __future__ import annotations

import fnmatch
import importlib
import pkgutil
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import strongdm
from google.protobuf.message import Message

NANOS_PER_SECOND = 1_000_000_000


class StreamKind(StrEnum):
    ACTIVITY = "activity"
    QUERY = "query"
    HISTORY = "history"
    SECRET_LOG = "secret_log"  # ManagedSecrets.Logs: who retrieved or changed a managed secret
    # Session content: the stream lists Queries like ``queries`` does, and each completed
    # replayable session found is expanded into its Replays chunks (engine.replays).
    REPLAY = "replay"
    REPLAY_CHUNKS = "replay_chunks"  # Replays.List itself: keyed by query id, not a time stream


# Streams a wildcard in ``[streams] include`` does not select: they must be named. Replays
# cost calls per session (a listing of its chunks), so an operator opts in to them.
OPT_IN_KINDS = frozenset({StreamKind.REPLAY})


@dataclass(frozen=True)
class StreamSpec:
    """Everything needed to list, time and key the records of one stream."""

    name: str  # the SDK client attribute, e.g. "accounts_history"
    kind: StreamKind
    service: str  # gRPC service name without package, e.g. "AccountsHistory"
    method_path: str  # "/v1.AccountsHistory/List"
    signing_name: str  # "AccountsHistory.List", what the signature covers
    request_class: Any  # generated protobuf message class
    response_class: Any
    record_class: Any
    records_field: str  # repeated field of the response holding the records
    time_field: str  # the record's time, as the API filters on it
    entity_field: str | None  # history streams: the changed entity (field 3)
    method: str = "List"  # the gRPC method: "Logs" for ManagedSecrets

    @property
    def opt_in(self) -> bool:
        """Selected only by its own name, never by a wildcard (``OPT_IN_KINDS``)."""
        return self.kind in OPT_IN_KINDS

    def record_time_ns(self, record: Message) -> int:
        """The record's time in nanoseconds since the epoch (0 when unset)."""
        ts = getattr(record, self.time_field)
        return int(ts.seconds) * NANOS_PER_SECOND + int(ts.nanos)

    def relist_time_ns(self, record: Message) -> int:
        """The latest time the API might filter this record on.

        Which time the Queries filter uses is unknown (start ``timestamp`` or
        ``completed_at``), so a delivered query must be remembered until both have fallen
        behind the listing window.
        """
        return self.record_facts(record)[2]

    def record_facts(self, record: Message) -> tuple[str, int, int]:
        """``(record_key, record_time_ns, relist_time_ns)`` in one call.

        The poller needs all three for every record listed; read together, the record's
        time is read once instead of twice (a third of the engine's per-record cost went
        into these three calls). The relist rule lives here; keys come from ``record_key``'s
        rules (``query_key`` for queries).
        """
        ts = getattr(record, self.time_field)
        time_ns = ts.seconds * NANOS_PER_SECOND + ts.nanos
        if self.kind is StreamKind.ACTIVITY or self.kind is StreamKind.SECRET_LOG:
            return record.id, time_ns, time_ns  # type: ignore[attr-defined]
        if self.kind is StreamKind.QUERY or self.kind is StreamKind.REPLAY:
            done = record.completed_at  # type: ignore[attr-defined]
            done_ns = done.seconds * NANOS_PER_SECOND + done.nanos
            return query_key(record), time_ns, max(time_ns, done_ns)
        return self.record_key(record), time_ns, time_ns

    def record_key(self, record: Message) -> str:
        """A key that is unique per record, not per entity or per query.

        A long-running query is listed twice with one id (start record with an empty
        ``completed_at``, then the completion record), and one history activity can touch
        several entities, so neither ``id`` nor ``activity_id`` alone is unique.
        """
        if self.kind is StreamKind.ACTIVITY or self.kind is StreamKind.SECRET_LOG:
            return str(record.id)
        if self.kind is StreamKind.QUERY or self.kind is StreamKind.REPLAY:
            return query_key(record)
        assert self.entity_field is not None
        entity = getattr(record, self.entity_field)
        return f"{record.activity_id}:{entity_key(entity)}"


def query_key(query: Message) -> str:
    """Completion records keep the query id; an open start record gets ``<id>:start``."""
    completed = query.completed_at  # type: ignore[attr-defined]
    if completed.seconds or completed.nanos:
        return str(query.id)  # type: ignore[attr-defined]
    return f"{query.id}:start"  # type: ignore[attr-defined]


def query_is_open(query: Message) -> bool:
    """A start record of a long-running query: its completion will be listed later."""
    completed = query.completed_at  # type: ignore[attr-defined]
    return not (completed.seconds or completed.nanos)


_EntityShape = tuple[tuple[str, ...], bool, tuple[str, ...], bool]
_ENTITY_SHAPES: dict[type, _EntityShape] = {}


def _entity_shape(message_class: type) -> _EntityShape:
    """What ``entity_key`` reads of a message type: its oneofs, whether it has an ``id``, its
    string ``*_id`` fields, whether it has a ``name``. Read from the descriptor once per type:
    walking it for every history record was a tenth of a backfill's per-record engine cost."""
    shape = _ENTITY_SHAPES.get(message_class)
    if shape is None:
        descriptor: Any = message_class.DESCRIPTOR  # type: ignore[attr-defined]
        fields = descriptor.fields_by_name
        id_fields = tuple(
            f.name for f in descriptor.fields if f.name.endswith("_id") and f.type == f.TYPE_STRING
        )
        shape = _ENTITY_SHAPES[message_class] = (
            tuple(o.name for o in descriptor.oneofs),
            "id" in fields,
            id_fields,
            "name" in fields,
        )
    return shape


def entity_key(entity: Any) -> str:
    """Identify the entity a history record changed.

    Polymorphic entities (Account, Node, Resource, SecretStore) wrap the real message in a
    oneof; association entities without an ``id`` (AccountResource, RoleResource) are keyed
    by their ``*_id`` fields; the organization, which the SDK exposes without an id, falls
    back to its name.
    """
    oneofs, has_id, id_fields, has_name = _entity_shape(type(entity))
    for oneof in oneofs:
        chosen = entity.WhichOneof(oneof)
        if chosen:
            return f"{chosen}:{entity_key(getattr(entity, chosen))}"
    if has_id and entity.id:
        return str(entity.id)
    id_parts = [f"{name}={value}" for name in id_fields if (value := getattr(entity, name))]
    if id_parts:
        return ",".join(id_parts)
    if has_name:
        return f"name={entity.name}"
    return str(entity.SerializeToString(deterministic=True).hex())


def _list_method_spec(module: Any, method_name: str) -> tuple[str, Any, Any]:
    services = list(module.DESCRIPTOR.services_by_name.values())
    if len(services) != 1:
        raise RuntimeError(f"strongdm.{module.__name__}: expected one service, found {len(services)}")
    service = services[0]
    method = service.methods_by_name.get(method_name)
    if method is None:
        raise RuntimeError(f"strongdm service {service.full_name} has no {method_name} method")
    return service.name, method.input_type, method.output_type


def _message_class(module: Any, descriptor: Any) -> Any:
    """Find the generated class for a descriptor, whichever *_pb2 module defines it."""
    owner = importlib.import_module(
        f"strongdm.{descriptor.file.name.rsplit('/', 1)[-1][: -len('.proto')]}_pb2"
    )
    cls = getattr(owner, descriptor.name, None) or getattr(module, descriptor.name, None)
    if cls is None:
        raise RuntimeError(f"no generated class for {descriptor.full_name}")
    return cls


def _build_spec(
    sdk_name: str,
    kind: StreamKind,
    time_field: str,
    *,
    module_name: str | None = None,
    method: str = "List",
) -> StreamSpec:
    """The spec of one stream: ``sdk_name`` is the stream's name, ``module_name`` the SDK
    module whose service it lists (the same, except for streams that list another's)."""
    module = importlib.import_module(f"strongdm.{module_name or sdk_name}_pb2")
    service, request_desc, response_desc = _list_method_spec(module, method)
    repeated = [f for f in response_desc.fields if f.is_repeated and f.message_type is not None]
    if len(repeated) != 1:
        raise RuntimeError(f"{response_desc.full_name}: expected one repeated record field")
    records_field = repeated[0]
    record_desc = records_field.message_type
    entity_field = None
    if kind is StreamKind.HISTORY:
        entity = record_desc.fields_by_number.get(3)
        if entity is None or entity.message_type is None:
            raise RuntimeError(f"{record_desc.full_name}: history record without an entity in field 3")
        entity_field = entity.name
    if time_field and time_field not in record_desc.fields_by_name:
        raise RuntimeError(f"{record_desc.full_name} has no time field {time_field!r}")
    package = request_desc.file.package
    return StreamSpec(
        name=sdk_name,
        kind=kind,
        service=service,
        method_path=f"/{package}.{service}/{method}",
        signing_name=f"{service}.{method}",
        request_class=_message_class(module, request_desc),
        response_class=_message_class(module, response_desc),
        record_class=_message_class(module, record_desc),
        records_field=records_field.name,
        time_field=time_field,
        entity_field=entity_field,
        method=method,
    )


def sdk_history_stream_names() -> list[str]:
    """Every ``*_history`` module the installed SDK ships, which is every history service."""
    return sorted(
        m.name[: -len("_pb2")]
        for m in pkgutil.iter_modules(strongdm.__path__)
        if m.name.endswith("_history_pb2")
    )


def _build_registry() -> dict[str, StreamSpec]:
    specs = [
        _build_spec("activities", StreamKind.ACTIVITY, "completed_at"),
        _build_spec("queries", StreamKind.QUERY, "timestamp"),
    ]
    specs += [_build_spec(name, StreamKind.HISTORY, "timestamp") for name in sdk_history_stream_names()]
    specs += [
        _build_spec(
            "managed_secret_logs",
            StreamKind.SECRET_LOG,
            "created_at",
            module_name="managed_secrets",
            method="Logs",
        ),
        _build_spec("replays", StreamKind.REPLAY, "timestamp", module_name="queries"),
    ]
    return {spec.name: spec for spec in specs}


STREAMS: dict[str, StreamSpec] = _build_registry()
ALL_STREAM_NAMES: tuple[str, ...] = tuple(STREAMS)
# What ``"*"`` selects: every stream but the opt-in ones.
DEFAULT_STREAM_NAMES: tuple[str, ...] = tuple(name for name, spec in STREAMS.items() if not spec.opt_in)
# Streams the API serves from a store of their own (``replays`` lists the queries' service).
SERVED_STREAM_NAMES: tuple[str, ...] = tuple(
    name for name, spec in STREAMS.items() if spec.kind is not StreamKind.REPLAY
)
# Replays.List: a session's chunks, by query id (filter ``id:"<query id>"``); no time field.
REPLAY_CHUNKS: StreamSpec = _build_spec("replay_chunks", StreamKind.REPLAY_CHUNKS, "", module_name="replays")


def select_streams(patterns: Iterable[str]) -> list[StreamSpec]:
    """Resolve include globs (``"*_history"``) to specs, in registry order.

    Raises ValueError naming a pattern that matches nothing, since a typo there would
    otherwise silently stop a stream from being exported. Opt-in streams (``replays``) are
    selected only by their exact name.
    """
    chosen: list[str] = []
    for pattern in patterns:
        matches = [
            name
            for name in ALL_STREAM_NAMES
            if name == pattern or (not STREAMS[name].opt_in and fnmatch.fnmatchcase(name, pattern))
        ]
        if not matches:
            raise ValueError(
                f"stream pattern {pattern!r} matches no stream; known streams: {', '.join(ALL_STREAM_NAMES)}"
            )
        chosen.extend(m for m in matches if m not in chosen)
    return [STREAMS[name] for name in ALL_STREAM_NAMES if name in chosen]
