"""Per-field redaction of events before any sink sees them.

Query bodies, emails, resource credentials: an operator must be able to keep a field out of
the SIEM entirely (``drop``) or replace it by a keyed hash (``hash``) that still lets
analysts correlate equal values without learning them. The hash is
``hmac-sha256:<hex HMAC-SHA256(key, value)>``; the key is secret so nobody can confirm a
guessed value by hashing it, and a different key gives unrelated hashes.

Field names are event (camelCase) names: ``queryBody``, ``actorEmail``. Dotted paths reach
into nested values: ``capture.env``, ``resource.password``, ``entityDetails.email`` (a list
on the way applies the rest of the path to each element), and ``*`` matches any key at one
level (``capture.env.*``). A map key that itself contains dots (``resourceTags.team.io``) is
matched as a whole before the path is split further.

Every event field is redacted on its own, and some repeat others: ``actorName`` joins
``actorFirstName`` and ``actorLastName``; ``entities`` lists the ids in ``entityDetails``; an
SSH/Kubernetes query's ``queryBody`` is the JSON of its ``capture`` (so hiding a session's
commands takes ``queryBody`` and ``capture.command``/``capture.clientCommand``). CEF lines are
built from the redacted event, so a dropped field reaches no format.

A ``null`` value stays ``null`` under ``hash`` (there is nothing to hide). ``apply`` never
mutates its input: it copies the containers on the path it changes, so an
event shared with another consumer is safe.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from auditstream.formats.events import Event

HASH_PREFIX = "hmac-sha256:"
WILDCARD = "*"


class RedactionRule(BaseModel):
    """One field to drop or hash, by its event name or a dotted path into nested values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = Field(min_length=1, pattern=r"^[^.]+(\.[^.]+)*$")
    action: Literal["drop", "hash"]


class Redactor:
    """Applies a list of rules to events; build once from settings, call per event."""

    def __init__(self, rules: Iterable[RedactionRule], hash_key: bytes | None) -> None:
        self._rules: tuple[tuple[tuple[str, ...], str], ...] = tuple(
            (tuple(rule.field.split(".")), rule.action) for rule in rules
        )
        for rule in self._rules:
            if rule[1] == "hash" and not hash_key:
                raise ValueError(
                    f"redaction rule for field {'.'.join(rule[0])!r} hashes values but no hash key "
                    "is configured (set normalize.hash_key or hash_key_file)"
                )
        self._key = hash_key or b""

    @property
    def active(self) -> bool:
        """False when there are no rules: callers can skip ``apply`` entirely."""
        return bool(self._rules)

    def hash_value(self, value: Any) -> str:
        """The keyed hash of one value (strings as UTF-8, anything else as canonical JSON)."""
        data = (
            value.encode("utf-8")
            if isinstance(value, str)
            else orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        )
        return HASH_PREFIX + hmac.new(self._key, data, hashlib.sha256).hexdigest()

    def apply(self, event: Event) -> Event:
        """A copy of ``event`` with every rule applied (the input is left unchanged)."""
        result: Any = event
        for path, action in self._rules:
            result = self._redact(result, path, action)
        return dict(result) if result is event else result  # type: ignore[no-any-return]

    def _redact(self, node: Any, path: Sequence[str], action: str) -> Any:
        """Return ``node`` with ``path`` redacted, copying only what changes."""
        if isinstance(node, list):
            changed = [self._redact(item, path, action) for item in node]
            return changed if any(a is not b for a, b in zip(changed, node, strict=True)) else node
        if not isinstance(node, dict) or not path:
            return node
        whole = ".".join(path)
        if len(path) > 1 and whole in node:  # a key with dots, e.g. a tag "team.io"
            return self._leaf(node, [whole], action)
        head, rest = path[0], path[1:]
        keys = list(node) if head == WILDCARD else ([head] if head in node else [])
        if not rest:
            return self._leaf(node, keys, action)
        copy: dict[str, Any] | None = None
        for key in keys:
            child = node[key]
            new_child = self._redact(child, rest, action)
            if new_child is not child:
                if copy is None:
                    copy = dict(node)
                copy[key] = new_child
        return node if copy is None else copy

    def _leaf(self, node: dict[str, Any], keys: Sequence[str], action: str) -> dict[str, Any]:
        if not keys:
            return node
        copy = dict(node)
        for key in keys:
            if action == "drop":
                del copy[key]
            elif copy[key] is not None:
                copy[key] = self.hash_value(copy[key])
        return copy
