"""Read a record through a flattened copy of its message type, with sub-messages as bytes.

Reading a protobuf field through upb creates a Python wrapper for every nested message and
repeated container touched; for an activity (actor, two entities, the entity list) that was
40% of its conversion. Serializing the record once and parsing the bytes into a copy of its
type whose nested message fields are declared ``bytes`` (wire-compatible: both are
length-delimited) costs less, and gives each nested message as its exact serialized bytes:
a key under which its converted form can be cached, as actors and entities repeat from one
record to the next.

The copy is made at run time from the installed SDK's own descriptor (no generated code),
so a field the SDK adds is carried over; it lives in a private descriptor pool.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2
from google.protobuf.descriptor import Descriptor

_pool = descriptor_pool.DescriptorPool()
_timestamp_file = descriptor_pb2.FileDescriptorProto()
timestamp_pb2.DESCRIPTOR.CopyToProto(_timestamp_file)
_pool.Add(_timestamp_file)
_classes: dict[tuple[str, tuple[str, ...]], Any] = {}

TIMESTAMP = "google.protobuf.Timestamp"


def flat_class(descriptor: Descriptor, as_bytes: Iterable[str]) -> Any:
    """A message class like ``descriptor``'s where the fields ``as_bytes`` are ``bytes``.

    Only message fields can be flattened, and every other message field must be a
    Timestamp (the only message type the private pool knows); anything else raises
    ValueError, so a converter can fall back to reading the record itself.
    """
    names = tuple(sorted(as_bytes))
    cached = _classes.get((descriptor.full_name, names))
    if cached is not None:
        return cached
    proto = descriptor_pb2.DescriptorProto()
    descriptor.CopyToProto(proto)
    proto.name = f"Flat{descriptor.name}"
    for field in proto.field:
        if field.type != descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE:
            if field.name in names:
                raise ValueError(f"{descriptor.full_name}.{field.name} is not a message field")
            continue
        if field.name in names:
            field.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
            field.ClearField("type_name")
        elif field.type_name == f".{TIMESTAMP}":
            continue
        else:
            raise ValueError(f"{descriptor.full_name}.{field.name}: {field.type_name} cannot be kept")
    file = descriptor_pb2.FileDescriptorProto(
        name=f"auditstream/flat/{descriptor.full_name}/{'-'.join(names)}.proto",
        package=f"auditstream.flat{len(_classes)}",
        syntax="proto3",
        dependency=[_timestamp_file.name],
    )
    file.message_type.append(proto)
    _pool.Add(file)
    cls = message_factory.GetMessageClass(_pool.FindMessageTypeByName(f"{file.package}.{proto.name}"))
    _classes[(descriptor.full_name, names)] = cls
    return cls
