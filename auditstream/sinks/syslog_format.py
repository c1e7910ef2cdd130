"""Syslog message formats (RFC 5424, RFC 3164), framing (RFC 6587) and the UDP size policy.

Pure functions, no I/O, so every rule is unit-tested directly:

* RFC 5424 ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG`` with a UTC timestamp of
  exactly 6 fractional digits (rsyslog mangles more), header fields cut to their limits
  (HOSTNAME 255, APP-NAME 48, MSGID 32) and restricted to printable ASCII, ``-`` when empty.
  MSGID is the stream name; the SD element ``[auditstream@32473 stream="…" id="…"]`` carries
  the stream and the record key with ``"``, ``\\`` and ``]`` escaped. No BOM (MSG-ANY).
* RFC 3164 ``<PRI>Mmm dd hh:mm:ss HOST TAG: MSG`` (UTC, day space-padded, TAG ≤ 32).
* Octet counting ``LEN SP MSG`` (default on TCP/TLS; newlines in a message are safe) or LF
  framing (a newline in a message would split it, so LF/CR are written as ``\\n``/``\\r``).
* UDP: one message per datagram of at most ``udp_max_bytes`` (and 1024 for RFC 3164);
  a longer one is either truncated at a UTF-8 boundary and marked, or refused.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from typing import Literal

FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
    "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13, "console": 14,
    "solaris-cron": 15, **{f"local{i}": 16 + i for i in range(8)},
}  # fmt: skip
SEVERITIES = {
    "emerg": 0, "alert": 1, "crit": 2, "err": 3, "warning": 4, "notice": 5, "info": 6, "debug": 7,
}  # fmt: skip

HOSTNAME_MAX = 255
APP_NAME_MAX = 48
MSGID_MAX = 32
SD_NAME_MAX = 32
TAG_MAX = 32
RFC3164_MAX = 1024
TRUNCATION_MARKER = b"...[truncated]"

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_NOT_PRINTABLE = re.compile(r"[^\x21-\x7e]")
_NOT_SD_NAME = re.compile(r"[^\x21-\x7e]|[=\]\"]")
_NOT_TAG = re.compile(r"[^A-Za-z0-9_.\-/]")


def header_field(value: str | None, limit: int) -> str:
    """Printable ASCII without spaces, cut to ``limit``; ``-`` (the NILVALUE) when empty."""
    cleaned = _NOT_PRINTABLE.sub("_", value or "")[:limit]
    return cleaned or "-"


def sd_name(value: str) -> str:
    """An SD-ID or parameter name: printable ASCII without ``= ] "``, at most 32 characters.

    An SD-ID with an ``@`` keeps its enterprise number when cut."""
    cleaned = _NOT_SD_NAME.sub("_", value)
    if len(cleaned) > SD_NAME_MAX and "@" in cleaned:
        name, _, number = cleaned.rpartition("@")
        cleaned = f"{name[: SD_NAME_MAX - len(number) - 1]}@{number}"
    return cleaned[:SD_NAME_MAX] or "_"


def sd_escape(value: str) -> str:
    if '"' not in value and "\\" not in value and "]" not in value:
        return value
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


@functools.lru_cache(maxsize=1024)
def _utc_second(seconds: int) -> str:
    return f"{dt.datetime.fromtimestamp(seconds, dt.UTC):%Y-%m-%dT%H:%M:%S}"


def rfc5424_timestamp(time_ns: int) -> str:
    seconds, rest = divmod(time_ns, 1_000_000_000)
    return f"{_utc_second(seconds)}.{rest // 1000:06d}Z"


def rfc3164_timestamp(time_ns: int) -> str:
    moment = dt.datetime.fromtimestamp(time_ns // 1_000_000_000, dt.UTC)
    return f"{_MONTHS[moment.month - 1]} {moment.day:>2} {moment:%H:%M:%S}"


class SyslogFormatter:
    """Builds one syslog message (unframed) from an envelope's stream, key, time and body."""

    def __init__(
        self,
        *,
        rfc: Literal[5424, 3164],
        facility: int,
        severity: int,
        hostname: str,
        app_name: str,
        structured_data: bool,
        sd_id: str,
    ) -> None:
        self.rfc = rfc
        self._pri = f"<{facility * 8 + severity}>"
        self._structured = structured_data
        self._sd_id = sd_name(sd_id)
        self._hostname = header_field(hostname, HOSTNAME_MAX)
        self._app = header_field(app_name, APP_NAME_MAX)
        self._tag = _NOT_TAG.sub("_", app_name)[:TAG_MAX] or "auditstream"
        self._after_time: dict[str, str] = {}  # per stream: " HOSTNAME APP-NAME PROCID MSGID "

    def structured(self, stream: str, key: str) -> str:
        return f'[{self._sd_id} stream="{sd_escape(stream)}" id="{sd_escape(key)}"]'

    def format(self, stream: str, key: str, time_ns: int, body: bytes) -> bytes:
        if self.rfc == 3164:
            head = f"{self._pri}{rfc3164_timestamp(time_ns)} {self._hostname} {self._tag}: "
            return head.encode("utf-8") + body
        middle = self._after_time.get(stream)
        if middle is None:
            middle = f" {self._hostname} {self._app} - {header_field(stream, MSGID_MAX)} "
            self._after_time[stream] = middle
        sd = self.structured(stream, key) if self._structured else "-"
        head = f"{self._pri}1 {rfc5424_timestamp(time_ns)}{middle}{sd} "
        return head.encode("utf-8") + body


def frame(message: bytes, framing: Literal["octet-counting", "lf"]) -> bytes:
    if framing == "octet-counting":
        return b"%d " % len(message) + message
    return message.replace(b"\n", b"\\n").replace(b"\r", b"\\r") + b"\n"


def fit_datagram(message: bytes, limit: int, policy: Literal["truncate", "refuse"]) -> bytes | None:
    """The datagram to send, or None when the message is too long and the policy refuses it."""
    if len(message) <= limit:
        return message
    if policy == "refuse":
        return None
    keep = message[: max(limit - len(TRUNCATION_MARKER), 0)]
    keep = keep.decode("utf-8", errors="ignore").encode("utf-8")  # no half characters
    return keep + TRUNCATION_MARKER
