"""Values the SIEM-schema encoders (``ocsf``, ``ecs``) read out of an event, checked once.

Both encoders work on the event dict after masking and redaction, so any field may be
missing, or be a keyed hash where an address or an email was. A schema field typed as an IP
address or an email address must hold one (OCSF's ``ip_t`` and ``email_t`` carry regexes,
Elasticsearch's ``ip`` refuses a document with anything else), so values are classified here
and only what really is an address goes into such a field; the rest stays in the vendor
section. Addresses, emails and targets repeat from record to record, so each distinct value
is worked out once (bounded caches, ``cache.remember``).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from auditstream.formats.cache import remember

# OCSF's email_t regex (the same in 1.7.0 and 1.8.0): an address that fails it is not one.
_EMAIL = re.compile(r"^[a-zA-Z0-9!#$%&'*+\-/=?^_`{|}~.]+@[a-zA-Z0-9-]+\.[a-zA-Z0-9\-.]+$")
_ips: dict[str, str | None] = {}
_emails: dict[str, str | None] = {}
_targets: dict[str, Target] = {}


def ip_of(value: Any) -> str | None:
    """``value`` if it is an IPv4 or IPv6 address (no zone, no brackets), else None."""
    if type(value) is not str or not value:
        return None
    known = _ips.get(value, _MISSING)
    if known is _MISSING:
        known = remember(_ips, value, _parse_ip(value))
    return known  # type: ignore[no-any-return]


_MISSING: Any = object()


def _parse_ip(value: str) -> str | None:
    if len(value) > 39 or not value.isascii():  # the longest IPv6 text form is 39 characters
        return None
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return None
    return value


def email_of(value: Any) -> str | None:
    """``value`` if it is an email address by OCSF's definition, else None (a keyed hash...)."""
    if type(value) is not str or not value:
        return None
    known = _emails.get(value, _MISSING)
    if known is _MISSING:
        known = remember(_emails, value, value if _EMAIL.match(value) else None)
    return known  # type: ignore[no-any-return]


def text(value: Any) -> str | None:
    """A non-empty string, else None: protobuf's ``""`` means unset, and a schema field is
    better absent than empty."""
    return value if type(value) is str and value else None


def full_name(first: Any, last: Any) -> str | None:
    """``"First Last"``, whichever part is set, None when neither is."""
    if type(first) is str and first and type(last) is str and last:
        return f"{first} {last}"
    return text(first) or text(last)


class Target(NamedTuple):
    """Where a query went, from a query's ``target`` (``host:port``, ``[v6]:port``,
    ``host:port/db``, ``https://host/...``): a host name or an address, a port, a path."""

    hostname: str | None
    ip: str | None
    port: int | None
    path: str | None
    scheme: str | None


NO_TARGET = Target(None, None, None, None, None)


def target_of(value: Any) -> Target:
    """The parts of a ``target``; NO_TARGET when it has none."""
    if type(value) is not str or not value:
        return NO_TARGET
    known = _targets.get(value)
    if known is None:
        known = remember(_targets, value, _parse_target(value))
    return known


def _parse_target(value: str) -> Target:
    scheme: str | None = None
    path: str | None = None
    if "://" in value:
        try:
            parts = urlsplit(value)
            host, port = parts.hostname, parts.port
        except ValueError:
            return NO_TARGET
        scheme, path = parts.scheme or None, parts.path or None
    else:
        hostport, slash, rest = value.partition("/")
        path = f"/{rest}" if slash else None
        port_text = ""
        if hostport.startswith("["):
            host, _, after = hostport[1:].partition("]")
            port_text = after[1:] if after.startswith(":") else ""
        elif hostport.count(":") == 1:
            host, port_text = hostport.split(":")
        else:
            host = hostport  # a name, or a bare IPv6 address
        port = int(port_text) if port_text.isascii() and port_text.isdigit() else None
    if port is not None and not 0 <= port <= 65535:
        port = None
    if not host:
        return Target(None, None, port, path, scheme)
    address = ip_of(host)
    return Target(None if address else host, address, port, path, scheme)


# The ``[<kind>]`` words that name where an activity's actor signed in.
_SERVICES = (("admin ui", "Admin UI"), ("local client", "local client"), ("child org", "child organization"))


def sign_in_service(verb: str) -> str:
    """Which StrongDM front end an authentication verb is about (``Admin UI``, ...)."""
    lowered = verb.lower()
    for word, name in _SERVICES:
        if word in lowered:
            return name
    return "StrongDM"
