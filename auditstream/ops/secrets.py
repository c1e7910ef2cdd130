"""The one scrubber: which strings are secrets, in every form they could leak in, and
replacing them in everything the daemon prints, serves or writes.

Every output goes through :func:`redact` (text) or :func:`scrub` (structured values): log
lines, ``/metrics`` label values, the ``/readyz`` body, ``auditstream check`` lines, sink
health errors, dead-letter reasons, receivers' answers quoted in errors, the systemd status
line. Code must still never print a secret; this catches what nobody thought of, such as a
receiver that quotes the request's ``Authorization`` header in its error body.

One process-wide registry (:func:`register_secrets`, fed from the configuration by
:func:`config_secrets` at start-up) plus, where a component knows its own credentials (a
sink), a local :class:`Secrets` passed as ``also``, so that a sink used without a daemon
around it (a test, a script) is safe too.

Each registered value is expanded into the forms it takes on the way out (:func:`forms`):
itself, its base64 (standard, URL-safe, with and without padding), what it decodes to if
it is base64 (the StrongDM secret key is), and those as a JSON string or a URL would carry
them. HTTP Basic credentials are registered as the ``user:password`` pair, so the header
value ``Basic base64(user:password)`` is covered; ``Bearer <token>`` and ``Splunk <token>``
are covered by the token itself.

Every configured secret is a pydantic ``SecretStr`` (the API secret key, sink tokens and
passwords, the redaction hash key, TLS key passwords), so finding them needs no list that
could fall behind the schema.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote, quote_plus

from pydantic import BaseModel, SecretStr

REDACTED = "[redacted]"
MIN_SECRET_LENGTH = 6
"""Shorter values cannot be scrubbed without mangling ordinary words; don't use such secrets."""


# -- which strings ------------------------------------------------------------------------


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    """(field name, value) of every field of every model under ``node``."""
    if isinstance(node, BaseModel):
        for name, value in node:
            yield name, value
            yield from _walk(value)
    elif isinstance(node, list | tuple):
        for item in node:
            yield from _walk(item)
    elif isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)


def _basic_credentials(node: Any) -> Iterator[str]:
    """``user:password`` of every model with both (HTTP Basic auth)."""
    if isinstance(node, BaseModel):
        username = getattr(node, "username", None)
        password = getattr(node, "password", None)
        if isinstance(username, str) and isinstance(password, SecretStr):
            yield f"{username}:{password.get_secret_value()}"
        for _, value in node:
            yield from _basic_credentials(value)
    elif isinstance(node, list | tuple):
        for item in node:
            yield from _basic_credentials(item)


def config_secrets(config: BaseModel) -> set[str]:
    """Every secret of ``config`` (a whole configuration or one sink's settings), plus the
    ``user:password`` pair of each Basic credential; :func:`forms` expands them."""
    values = {value.get_secret_value() for _, value in _walk(config) if isinstance(value, SecretStr)}
    values.update(_basic_credentials(config))
    return {value for value in values if value}


def _decoded(value: str) -> str | None:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _carried(text: str) -> set[str]:
    """``text`` as a JSON string's content (with and without ASCII escapes, with ``\\/``)
    and as a URL component: how a receiver that quotes it back would write it."""
    found = {text, json.dumps(text, ensure_ascii=False)[1:-1], json.dumps(text)[1:-1]}
    found |= {f.replace("/", "\\/") for f in found}
    found |= {quote(text, safe=""), quote_plus(text, safe="")}
    return found


def forms(secret: str) -> set[str]:
    """Every form of ``secret`` that is long enough to scrub safely (see the module docstring)."""
    encoded = secret.encode()
    plain = {secret, base64.b64encode(encoded).decode(), base64.urlsafe_b64encode(encoded).decode()}
    plain |= {p.rstrip("=") for p in plain}
    decoded = _decoded(secret)
    if decoded:
        plain.add(decoded)
    found: set[str] = set()
    for text in plain:
        found |= _carried(text)
    return {f for f in found if len(f) >= MIN_SECRET_LENGTH}


# -- replacing them -----------------------------------------------------------------------


class Secrets:
    """A set of secrets in all their :func:`forms`, longest first."""

    __slots__ = ("forms",)

    def __init__(self, values: Iterable[str] = ()) -> None:
        self.forms: tuple[str, ...] = ()
        self.add(values)

    def add(self, values: Iterable[str]) -> None:
        """Add secrets (idempotent); the tuple is replaced whole, so readers never see half."""
        known = set(self.forms)
        for value in values:
            known |= forms(value)
        self.forms = tuple(sorted(known, key=lambda s: (-len(s), s)))

    def __bool__(self) -> bool:
        return bool(self.forms)


_REGISTRY = Secrets()


def register_secrets(values: Iterable[str]) -> None:
    """Add strings (and their forms) that must never appear in any output."""
    _REGISTRY.add(values)


def active(also: Secrets | None = None) -> bool:
    """Whether anything is registered (lets hot paths skip scrubbing)."""
    return bool(_REGISTRY) or bool(also)


def _replace(text: str, secrets: tuple[str, ...]) -> str:
    """Every occurrence of every secret replaced; overlapping occurrences are replaced as one
    span, so no piece of one survives next to another."""
    spans: list[tuple[int, int]] = []
    for secret in secrets:
        start = text.find(secret)
        while start != -1:
            spans.append((start, start + len(secret)))
            start = text.find(secret, start + 1)
    if not spans:
        return text
    spans.sort()
    out: list[str] = []
    position = 0
    end = -1
    for start, stop in spans:
        if start > end:  # a new span: flush the text since the previous one
            if end >= 0:
                out.append(REDACTED)
            out.append(text[position:start])
            end = stop
        else:
            end = max(end, stop)
        position = end
    out.append(REDACTED)
    out.append(text[position:])
    return "".join(out)


def redact(text: str, also: Secrets | None = None) -> str:
    """``text`` with every registered secret (and those of ``also``) replaced by ``[redacted]``."""
    secrets = _REGISTRY.forms + also.forms if also else _REGISTRY.forms
    return _replace(text, secrets) if secrets else text


def scrub(value: Any, also: Secrets | None = None) -> Any:
    """:func:`redact` applied to every string inside ``value`` (dicts, lists, bytes, objects
    as their ``str``); numbers, booleans and None pass unchanged."""
    if isinstance(value, str):
        return redact(value, also)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {key: scrub(item, also) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [scrub(item, also) for item in value]
    if isinstance(value, bytes | bytearray):
        return redact(bytes(value).decode("utf-8", "backslashreplace"), also)
    return redact(str(value), also)
