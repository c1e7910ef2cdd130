"""Descriptor-driven message -> dict converters, compiled once per message type.

History streams carry 26 entity types, and some of them are polymorphic: ``Resource`` alone
is a oneof over 119 resource messages. Writing those by hand would rot with every SDK
release; ``json_format.MessageToDict`` re-walks descriptors for every record and is slower
than the SDK itself. Instead each message type is compiled ONCE into a plan, a tuple of
``(event key, getter)`` pairs, and converting a record is a loop over that plan.

Naming and value rules (shared with the hand-written converters through ``protovalues``):

- keys are the protobuf JSON names (camelCase: ``secret_store_id`` -> ``secretStoreId``,
  ``authzJson`` stays as on the wire); a Duration field gets an ``Ms`` suffix
  (``skip_after`` -> ``skipAfterMs``);
- scalars are kept as they are, including proto3 defaults (``""``, ``0``, ``false``), so
  every field of the record is present;
- Timestamp / Duration / Tags / bytes: see ``protovalues``;
- a nested message that is not set -> ``None``; repeated -> list; map -> dict;
- ``LogCategoryConfigMap`` (a map spelled as a repeated message) -> ``{name: config}``;
- a polymorphic wrapper (a message whose fields all sit in one oneof: Account, Node,
  Resource, SecretStore) is flattened to ``{"type": <oneof member>, ...member fields}``;
  a wrapper whose member this SDK does not know (newer server) -> ``{"type": "unknown"}``.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from auditstream.formats import protovalues

Converter = Callable[[Message], dict[str, Any]]
Getter = Callable[[Message], Any]

TIMESTAMP = "google.protobuf.Timestamp"
DURATION = "google.protobuf.Duration"
TAGS = "v1.Tags"
CATEGORY_MAP = "v1.LogCategoryConfigMap"
UNKNOWN_MEMBER = "unknown"

_converters: dict[str, Converter] = {}


def event_key(field: FieldDescriptor) -> str:
    """The event key of a field: its JSON name, plus ``Ms`` for a Duration."""
    message = field.message_type
    if message is not None and message.full_name == DURATION and not field.is_repeated:
        return f"{field.json_name}Ms"
    return str(field.json_name)


def is_polymorphic(descriptor: Descriptor) -> bool:
    """A wrapper whose every field is a message in one single oneof (Account, Resource...)."""
    oneofs = descriptor.oneofs
    return (
        len(oneofs) == 1
        and len(oneofs[0].fields) == len(descriptor.fields) > 0
        and all(f.message_type is not None for f in descriptor.fields)
    )


def converter_for(descriptor: Descriptor) -> Converter:
    """The cached converter for a message type, compiling it on first use."""
    converter = _converters.get(descriptor.full_name)
    if converter is None:
        converter = _compile(descriptor)
        _converters[descriptor.full_name] = converter
    return converter


def _lazy(descriptor: Descriptor) -> Converter:
    """Resolve a nested type's converter on first call, so recursive types compile."""
    resolved: list[Converter] = []

    def convert(message: Message) -> dict[str, Any]:
        if not resolved:
            resolved.append(converter_for(descriptor))
        return resolved[0](message)

    return convert


def _compile(descriptor: Descriptor) -> Converter:
    if is_polymorphic(descriptor):
        return _compile_polymorphic(descriptor)
    plan: list[tuple[str, Getter]] = []
    for field in descriptor.fields:
        key = event_key(field)
        if any(key == existing for existing, _ in plan):
            raise RuntimeError(f"{descriptor.full_name}: two fields map to the event key {key!r}")
        plan.append((key, _getter(field)))
    frozen = tuple(plan)

    def convert(message: Message) -> dict[str, Any]:
        return {key: get(message) for key, get in frozen}

    return convert


def _compile_polymorphic(descriptor: Descriptor) -> Converter:
    oneof = descriptor.oneofs[0].name
    for field in descriptor.fields:
        if any(event_key(inner) == "type" for inner in field.message_type.fields):
            # Would silently overwrite the discriminator; an SDK upgrade's tests stop here.
            raise RuntimeError(
                f"{field.message_type.full_name} has a 'type' field: it clashes with the oneof type"
            )
    members = {field.name: _lazy(field.message_type) for field in descriptor.fields}

    def convert(message: Message) -> dict[str, Any]:
        member = message.WhichOneof(oneof)
        if member is None:
            return {"type": UNKNOWN_MEMBER}
        return {"type": member, **members[member](getattr(message, member))}

    return convert


def _getter(field: FieldDescriptor) -> Getter:
    """How to read one field of a parent message as an event value."""
    name = field.name
    read: Getter = attrgetter(name)
    message = field.message_type
    if message is not None and message.GetOptions().map_entry:
        return _map_getter(read, message)
    if field.is_repeated:
        if message is None:
            return lambda parent: list(read(parent))
        element = _message_value(message)
        return lambda parent: [element(item) for item in read(parent)]
    if message is None:
        if field.type == FieldDescriptor.TYPE_BYTES:
            return lambda parent: protovalues.b64(read(parent))
        return read
    value = _message_value(message)
    if message.full_name in (TIMESTAMP, DURATION, TAGS):
        return lambda parent: value(read(parent))

    def optional(parent: Message) -> Any:
        return value(read(parent)) if parent.HasField(name) else None

    return optional


def _message_value(message: Descriptor) -> Getter:
    """Convert one message value (a field's content or a repeated element)."""
    if message.full_name == TIMESTAMP:
        return protovalues.timestamp
    if message.full_name == DURATION:
        return protovalues.duration_ms
    if message.full_name == TAGS:
        return protovalues.tags
    if message.full_name == CATEGORY_MAP:
        entry = message.fields_by_name["entries"].message_type
        config = _message_value(entry.fields_by_name["config"].message_type)
        return lambda value: {item.name: config(item.config) for item in value.entries}
    return _lazy(message)


def _map_getter(read: Getter, entry: Descriptor) -> Getter:
    """Maps become dicts, in key order; JSON keys are strings, so int/bool keys are stringified."""
    value_field = entry.fields_by_name["value"]
    key = (lambda k: k) if entry.fields_by_name["key"].type == FieldDescriptor.TYPE_STRING else str
    element: Getter
    if value_field.message_type is not None:
        element = _message_value(value_field.message_type)
    elif value_field.type == FieldDescriptor.TYPE_BYTES:
        element = protovalues.b64
    else:
        element = lambda v: v  # noqa: E731
    # Protobuf map order is unspecified (upb's differs between runs): sort, so equal records
    # always give byte-identical events.
    return lambda parent: {key(k): element(v) for k, v in sorted(read(parent).items())}
