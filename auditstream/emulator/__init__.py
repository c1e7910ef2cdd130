"""A wire-faithful emulator of the StrongDM audit API: List on the 28 audit streams,
ManagedSecrets.Logs and Replays.List.

It speaks gRPC with the official SDK's own protobuf messages, verifies request
signatures, paginates with opaque cursors, and can play every answer to what the real
service leaves undocumented (bound semantics, order, page sizes, which time the Queries
filter uses...) plus adversities (rate limits, faults, latency, late records, hostile
strings, live traffic, long-running sessions). Tests read the ground truth from it.

Public API:

* :class:`EmulatorOptions` and its enums: configuration;
* :class:`Emulator`: ``async start()/stop()``, ``port``, ``address``, ``truth()``,
  ``all_keys()``, ``insert()``, ``stats``; replays, encryption and planted secrets:
  ``replayable_query_ids()``, ``replay_commands()``, ``replay_events()``,
  ``encrypted_query_ids()``, ``encrypted_plaintext()``, ``log_private_key_pem``,
  ``planted_secrets()``;
* :func:`running_emulator`: the same on a background thread, as a context manager;
* :data:`DEMO_ACCESS_KEY`, :data:`DEMO_SECRET_KEY`, :func:`make_demo_credentials`.
"""

from auditstream.emulator.credentials import DEMO_ACCESS_KEY, DEMO_SECRET_KEY, make_demo_credentials
from auditstream.emulator.emulator import Emulator
from auditstream.emulator.options import (
    Bound,
    EmulatorOptions,
    Order,
    PageOrder,
    QueriesTime,
    ResetAt,
    SecretLogsTimeFilter,
    TimePrecision,
)
from auditstream.emulator.stats import EmulatorStats
from auditstream.emulator.threaded import running_emulator

__all__ = [
    "DEMO_ACCESS_KEY",
    "DEMO_SECRET_KEY",
    "Bound",
    "Emulator",
    "EmulatorOptions",
    "EmulatorStats",
    "Order",
    "PageOrder",
    "QueriesTime",
    "ResetAt",
    "SecretLogsTimeFilter",
    "TimePrecision",
    "make_demo_credentials",
    "running_emulator",
]
