"""Descriptor-driven message -> dict converters, generated once per message type.

History streams carry 26 entity types, and some of them are polymorphic: ``Resource`` alone
is a oneof over 119 resource messages. Writing those by hand would rot with every SDK
release; ``json_format.MessageToDict`` re-walks descriptors for every record and is slower
than the SDK itself. Instead each message type is turned ONCE into the source of one Python
function that builds the dict in a single expression::

    def _c_12(m):  # v1.Group
        return {'id': m.id, 'name': m.name, 'tags': _tags(m.tags), ...}

and ``exec``'d. A plan interpreted per field (a loop over ``(key, getter)`` pairs, one Python
call per field) cost three times as much: here a plain field is one attribute read, and
only Timestamps, Durations, Tags, bytes and nested messages call a helper. The generated
source is readable (``source_of``) and every reachable type is compiled and checked by the
tests; the values are exactly those of the rules below.

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
  a wrapper whose member this SDK does not know (newer server) -> ``{"type": "unknown"}``;
- credential fields (``credentials``) hold ``"[redacted]"`` when set, unless the converter
  was asked to keep credentials: two separate sets of functions, so neither pays for the
  other's choice at run time.
"""

from __future__ import annotations

import keyword
from collections.abc import Callable, Iterator
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from auditstream.formats import credentials, protovalues

Converter = Callable[[Message], dict[str, Any]]
Getter = Callable[[Any], Any]

TIMESTAMP = "google.protobuf.Timestamp"
DURATION = "google.protobuf.Duration"
TAGS = "v1.Tags"
CATEGORY_MAP = "v1.LogCategoryConfigMap"
UNKNOWN_MEMBER = "unknown"

# Helpers the generated code calls for the well-known types, by their name in the source.
_WELL_KNOWN = {TIMESTAMP: "_ts", DURATION: "_dur", TAGS: "_tags"}


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


def converter_for(descriptor: Descriptor, *, keep_credentials: bool = False) -> Converter:
    """The converter for a message type, generating it (and every type it reaches) on first use."""
    return _COMPILERS[keep_credentials].converter(descriptor)


def source_of(descriptor: Descriptor, *, keep_credentials: bool = False) -> str:
    """The generated source of a message type's converter (for tests and curious readers)."""
    compiler = _COMPILERS[keep_credentials]
    compiler.converter(descriptor)
    return compiler.sources[descriptor.full_name]


class _Compiler:
    """Generates converters into one namespace; one instance per credentials choice."""

    def __init__(self, keep_credentials: bool) -> None:
        self.keep_credentials = keep_credentials
        self.sources: dict[str, str] = {}
        self._names: dict[str, str] = {}  # message full name -> function name in _ns
        self._tables: list[tuple[dict[str, Converter], dict[str, str]]] = []  # oneof tables to fill
        self._ns: dict[str, Any] = {
            "_ts": protovalues.timestamp,
            "_dur": protovalues.duration_ms,
            "_tags": protovalues.tags,
            "_b64": protovalues.b64,
            "_REDACTED": credentials.REDACTED,
            "_UNKNOWN": {"type": UNKNOWN_MEMBER},
        }

    def converter(self, descriptor: Descriptor) -> Converter:
        name = self._names.get(descriptor.full_name)
        if name is None:
            self._compile_closure(descriptor)
            name = self._names[descriptor.full_name]
        converter: Converter = self._ns[name]
        return converter

    def _compile_closure(self, root: Descriptor) -> None:
        """Generate every not yet compiled type reachable from ``root`` in one go.

        Functions find each other by name in the shared namespace when called, so recursive
        and mutually recursive types need no lazy indirection.
        """
        pending = [d for d in _reachable(root) if d.full_name not in self._names]
        for descriptor in pending:
            self._names[descriptor.full_name] = f"_c_{len(self._names)}"
        try:
            for descriptor in pending:
                self._define(descriptor)
        except BaseException:
            for descriptor in pending:  # leave no half-compiled names behind
                self._names.pop(descriptor.full_name, None)
            self._tables.clear()
            raise
        for table, members in self._tables:  # every member function exists now
            table.update({member: self._ns[function] for member, function in members.items()})
        self._tables.clear()

    def _define(self, descriptor: Descriptor) -> None:
        name = self._names[descriptor.full_name]
        if is_polymorphic(descriptor):
            source = self._polymorphic_source(descriptor, name)
        else:
            source = self._plain_source(descriptor, name)
        code = compile(source, f"<converter {descriptor.full_name}>", "exec")
        exec(code, self._ns)  # source generated from descriptors, see the module docstring
        self.sources[descriptor.full_name] = source

    def _plain_source(self, descriptor: Descriptor, name: str) -> str:
        items: list[str] = []
        keys: set[str] = set()
        for field in descriptor.fields:
            key = event_key(field)
            if key in keys:
                raise RuntimeError(f"{descriptor.full_name}: two fields map to the event key {key!r}")
            keys.add(key)
            items.append(f"        {key!r}: {self._value(descriptor, field)},")
        body = "\n".join(items)
        return f"def {name}(m):  # {descriptor.full_name}\n    return {{\n{body}\n    }}\n"

    def _polymorphic_source(self, descriptor: Descriptor, name: str) -> str:
        for field in descriptor.fields:
            if any(event_key(inner) == "type" for inner in field.message_type.fields):
                # Would silently overwrite the discriminator; an SDK upgrade's tests stop here.
                raise RuntimeError(
                    f"{field.message_type.full_name} has a 'type' field: it clashes with the oneof type"
                )
        members = f"{name}_members"
        table: dict[str, Converter] = {}
        self._ns[members] = table
        self._tables.append(
            (table, {field.name: self._names[field.message_type.full_name] for field in descriptor.fields})
        )
        oneof = descriptor.oneofs[0].name
        return (
            f"def {name}(m):  # {descriptor.full_name}, polymorphic\n"
            f"    member = m.WhichOneof({oneof!r})\n"
            "    if member is None:\n"
            "        return dict(_UNKNOWN)\n"
            f"    return {{'type': member, **{members}[member](getattr(m, member))}}\n"
        )

    def _value(self, descriptor: Descriptor, field: FieldDescriptor) -> str:
        """The expression reading one field of ``m`` as an event value."""
        read = _read("m", field.name)
        message = field.message_type
        if not self.keep_credentials:
            redacted = self._redacted(descriptor, field, read)
            if redacted is not None:
                return redacted
        if message is not None and message.GetOptions().map_entry:
            helper = f"_map_{self._names[descriptor.full_name]}_{field.number}"
            self._ns[helper] = self._map_function(message)
            return f"{helper}({read})"
        if field.is_repeated:
            if message is None:
                return f"list({read})"
            return f"list(map({self._message_value(message)}, {read}))"
        if message is None:
            return f"_b64({read})" if field.type == FieldDescriptor.TYPE_BYTES else read
        if message.full_name in _WELL_KNOWN:
            return f"{_WELL_KNOWN[message.full_name]}({read})"
        return f"{self._message_value(message)}({read}) if m.HasField({field.name!r}) else None"

    def _redacted(self, descriptor: Descriptor, field: FieldDescriptor, read: str) -> str | None:
        """The expression for a credential field (``[redacted]`` when set), else None."""
        if credentials.is_credential(field):
            if field.is_repeated:
                return f"[_REDACTED if x else '' for x in {read}]"
            return f"_REDACTED if {read} else ''"
        flag = credentials.secret_flag(descriptor)
        if flag is not None and field.name == flag[1]:
            return f"(_REDACTED if {read} else '') if {_read('m', flag[0])} else {read}"
        return None

    def _message_value(self, message: Descriptor) -> str:
        """The name of the function converting one value of a message type."""
        if message.full_name in _WELL_KNOWN:
            return _WELL_KNOWN[message.full_name]
        if message.full_name == CATEGORY_MAP:
            helper = f"_catmap_{self._names[message.full_name]}"
            if helper not in self._ns:
                entry = message.fields_by_name["entries"].message_type
                config = self._message_value(entry.fields_by_name["config"].message_type)
                self._ns[helper] = _category_map(config, self._ns)
            return helper
        return self._names[message.full_name]

    def _map_function(self, entry: Descriptor) -> Getter:
        """Maps become dicts, in key order; JSON keys are strings, so int/bool keys are stringified.

        Protobuf map order is unspecified (upb's differs between runs): sorting makes equal
        records give byte-identical events.
        """
        value_field = entry.fields_by_name["value"]
        string_keys = entry.fields_by_name["key"].type == FieldDescriptor.TYPE_STRING
        element: Getter | None = None
        if value_field.message_type is not None:
            element = _by_name(self._message_value(value_field.message_type), self._ns)
        elif value_field.type == FieldDescriptor.TYPE_BYTES:
            element = protovalues.b64
        if string_keys and element is None:
            return lambda container: dict(sorted(container.items()))
        key: Getter = (lambda k: k) if string_keys else str
        convert: Getter = element if element is not None else (lambda v: v)
        return lambda container: {key(k): convert(v) for k, v in sorted(container.items())}


def _by_name(name: str, ns: dict[str, Any]) -> Getter:
    """Call the namespace's function ``name``, looked up when called (it may not exist yet)."""

    def call(value: Any) -> Any:
        return ns[name](value)

    return call


def _category_map(config_name: str, ns: dict[str, Any]) -> Getter:
    def convert(value: Any) -> dict[str, Any]:
        config = ns[config_name]
        return {item.name: config(item.config) for item in value.entries}

    return convert


def _read(variable: str, name: str) -> str:
    """Source reading field ``name`` (``getattr`` for names that are Python keywords)."""
    if name.isidentifier() and not keyword.iskeyword(name):
        return f"{variable}.{name}"
    return f"getattr({variable}, {name!r})"


def _reachable(root: Descriptor) -> Iterator[Descriptor]:
    """Every message type reachable from ``root`` (itself first), each once."""
    seen = {root.full_name}
    stack = [root]
    while stack:
        descriptor = stack.pop()
        yield descriptor
        for field in descriptor.fields:
            message = field.message_type
            if message is not None and message.full_name not in seen:
                seen.add(message.full_name)
                stack.append(message)


_COMPILERS = {keep: _Compiler(keep) for keep in (False, True)}
