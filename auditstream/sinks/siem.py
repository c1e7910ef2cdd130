"""What the SIEM-native sinks (azure_monitor, elasticsearch, datadog) share.

* The time a SIEM files an event under (Sentinel's ``TimeGenerated``, Elastic's
  ``@timestamp``) is the record's own time, written as RFC 3339 UTC, never the time of
  delivery: a backfill of last month must land in last month.
* Names that depend on the audit stream (``{stream}`` in a DCR stream name, a data stream, a
  tag) are resolved once per stream.
* How a request whose items the receiver judged one by one settles: the items refused for
  good are dead-lettered, the ones refused for a passing reason (throttled, a busy shard) are
  sent again *alone*, so what the receiver took is not sent twice; only when every item of
  the request failed for a passing reason is the request retried with backoff as a whole.
"""

from __future__ import annotations

from collections.abc import Sequence

from auditstream.formats.protovalues import rfc3339
from auditstream.sinks.delivery import WriteResult
from auditstream.sinks.retry import TransientError

NANOS_PER_SECOND = 1_000_000_000
STREAM_PLACEHOLDER = "{stream}"


def record_time(time_ns: int, digits: int = 9) -> str:
    """The record's time as RFC 3339 UTC with ``digits`` fractional digits (cut, not rounded,
    so a time never moves into the next second): 9 for Elastic (``date_nanos`` keeps them),
    7 for Azure (Kusto's ``datetime`` counts 100 ns ticks)."""
    text = rfc3339(*divmod(time_ns, NANOS_PER_SECOND))
    if digits >= 9 or not text.endswith("Z"):
        return text
    return text[: len(text) - 1 - (9 - digits)] + "Z" if digits else text[: len(text) - 11] + "Z"


class StreamTemplate:
    """A setting that may contain ``{stream}``, resolved per audit stream and remembered."""

    __slots__ = ("_resolved", "template")

    def __init__(self, template: str) -> None:
        self.template = template
        self._resolved: dict[str, str] = {}

    @property
    def per_stream(self) -> bool:
        return STREAM_PLACEHOLDER in self.template

    def __call__(self, stream: str) -> str:
        name = self._resolved.get(stream)
        if name is None:
            name = self._resolved[stream] = self.template.replace(STREAM_PLACEHOLDER, stream)
        return name


def settle_items(
    count: int,
    rejected: dict[int, str],
    again: Sequence[int],
    error: TransientError | None,
    resend: Sequence[Sequence[int]] = (),
) -> WriteResult:
    """The outcome of a request of ``count`` items judged one by one.

    ``rejected``: refused for good (dead-lettered with the reason); ``again``: refused for a
    passing reason (``error`` says why), sent again together as one request, without the
    items already taken; ``resend``: further groups to send again (e.g. halves of a part
    refused as too large). Raises ``error`` when every item is in ``again``: nothing was
    taken, so the whole request is retried after the machinery's backoff (and the
    receiver's ``Retry-After``) instead of at once."""
    if again and len(again) >= count and not rejected and not resend:
        assert error is not None
        raise error
    groups = [list(group) for group in resend if group]
    if again:
        groups.append(sorted(again))
    return WriteResult(rejected=dict(rejected), resend=groups)
