"""Amazon CloudWatch Logs: ``PutLogEvents`` into ``log_group``, one log stream per audit stream.

How a request becomes calls. The delivery machinery cuts requests by ``batch.max_events`` and
``batch.max_bytes``, across streams; PutLogEvents has limits of its own that the machinery
cannot know: one log stream per call, events in time order, at most 10,000 events and
1,048,576 bytes counting 26 bytes per event, no call spanning more than 24 hours, at most
256 KB per event. :func:`plan_calls` cuts each request into calls that keep every one of them
(a pure function, property-tested), and :func:`~auditstream.sinks.delivery.send_in_parts` sends
them concurrently (parallel calls to one log stream are allowed since sequence tokens are
ignored; we send none).

Why split inside the transport rather than ask the machinery to resend groups: a plan is
exact, so there is nothing to discover by sending, and a request stays one unit of
acknowledgement: a stream's ``send()`` returns only when every call holding its events has
succeeded (or the events were dead-lettered). Only a call that failed transiently is
handed back (``WriteResult.resend``) to be sent again on its own, so the calls that
succeeded are not repeated: at-least-once, with duplicates only for a call whose answer was
lost.

Per event, what CloudWatch says:

* accepted: acknowledged;
* ``rejectedLogEventsInfo``: the events it names as too old (more than 14 days, or before the
  group's retention), too new (more than 2 hours ahead) or expired go to the dead-letter file
  with that reason, exactly those. AWS documents ``tooOldLogEventEndIndex`` and
  ``expiredLogEventEndIndex`` as exclusive while emulators (moto) return the last rejected
  index; the event at that index is dead-lettered too, because reading it the other way
  could lose it, while this way costs at worst one event kept twice (in CloudWatch and in
  the dead-letter file);
* larger than 256 KB (262,144 bytes with its 26 bytes of overhead): dead-lettered whole with
  the reason, never truncated (a cut JSON document is no longer an audit record; the
  dead-letter file keeps it for replay elsewhere);
* throttling, 5xx, connection errors: retried; a missing group or stream is created when
  ``create = true`` (with ``retention_days`` on a group we create), else the sink stops;
* any other refusal of a call (InvalidParameterException...): the call is split in halves
  until the event that causes it is alone, which is dead-lettered with AWS's message (the
  same error for every event alone is CloudWatch's refusal, not the events': the delivery
  machinery fails the sink instead). The events ``rejectedLogEventsInfo`` names and those
  over 256 KB are ``WriteResult.invalid``: their time or size, never the target's refusal,
  so an old backfill is dead-lettered as documented.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from auditstream.formats import Encoding, make_encoder
from auditstream.sinks.aws import AwsClient, AwsRequestError, AwsSinkSettings, AwsTransport
from auditstream.sinks.base import BatchSettings, ProbeResult, SinkFatalError
from auditstream.sinks.delivery import Record, TransportSink, WriteResult, send_in_parts
from auditstream.sinks.retry import TransientError

MAX_CALL_BYTES = 1_048_576
EVENT_OVERHEAD = 26
MAX_CALL_EVENTS = 10_000
MAX_EVENT_BYTES = 256 * 1024  # message plus overhead; AWS has raised it to 1 MB since, not everywhere
MAX_SPAN_MS = 24 * 3600 * 1000
CALLS_AT_ONCE = 4
RETENTION_DAYS = frozenset(
    {1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653}
)
REJECTION_REASONS = {
    "tooOld": "CloudWatch Logs rejected the event as too old (more than 14 days ago, or before the "
    "log group's retention period)",
    "tooNew": "CloudWatch Logs rejected the event as too new (more than 2 hours in the future)",
    "expired": "CloudWatch Logs rejected the event as expired (older than the log group's retention)",
}


class CloudWatchBatchSettings(BatchSettings):
    """A request of up to one PutLogEvents call's worth; larger ones are split into calls."""

    max_events: int = Field(default=MAX_CALL_EVENTS, ge=1)
    max_bytes: int = Field(default=MAX_CALL_BYTES, ge=1024)


class CloudWatchLogsSinkSettings(AwsSinkSettings):
    type: Literal["cloudwatch_logs"] = "cloudwatch_logs"
    log_group: str = Field(min_length=1, max_length=512, pattern=r"^[\.\-_/#A-Za-z0-9]+$")
    log_stream: str = "{stream}"
    create: bool = True
    retention_days: int | None = None
    batch: CloudWatchBatchSettings = Field(default_factory=CloudWatchBatchSettings)

    @field_validator("log_stream")
    @classmethod
    def _template(cls, value: str) -> str:
        probe = value.replace("{stream}", "x")
        if not probe or "{" in probe or "}" in probe:
            raise ValueError(f"{value!r}: the only placeholder is {{stream}}")
        if ":" in probe or "*" in probe or len(probe) > 512:
            raise ValueError(
                f"{value!r}: log stream names cannot hold ':' or '*' (and at most 512 characters)"
            )
        return value

    @field_validator("retention_days")
    @classmethod
    def _retention(cls, value: int | None) -> int | None:
        if value is not None and value not in RETENTION_DAYS:
            raise ValueError(
                f"CloudWatch Logs accepts retention_days of {', '.join(map(str, sorted(RETENTION_DAYS)))}"
            )
        return value

    @model_validator(mode="after")
    def _retention_needs_create(self) -> CloudWatchLogsSinkSettings:
        if self.retention_days is not None and not self.create:
            raise ValueError("retention_days is set on log groups the sink creates: it needs create = true")
        return self


@dataclass
class CallPlan:
    """``calls``: indexes per PutLogEvents call, in the order to send; ``oversize``: indexes of
    events no call can take."""

    calls: list[list[int]] = field(default_factory=list)
    oversize: list[int] = field(default_factory=list)


def plan_calls(events: Sequence[tuple[str, int, int]]) -> CallPlan:
    """Cut ``events`` (log stream, timestamp in ms, message bytes) into PutLogEvents calls.

    Per log stream, events are sorted by time (stable: equal times keep their order), then
    taken greedily: a call ends when the next event would break the count, the byte limit
    (26 bytes per event included) or the 24-hour span."""
    plan = CallPlan()
    by_stream: dict[str, list[int]] = {}
    for index, (stream, _, size) in enumerate(events):
        if size + EVENT_OVERHEAD > MAX_EVENT_BYTES:
            plan.oversize.append(index)
        else:
            by_stream.setdefault(stream, []).append(index)
    for indexes in by_stream.values():
        indexes.sort(key=lambda i: events[i][1])
        call: list[int] = []
        size = start = 0
        for index in indexes:
            _, timestamp, length = events[index]
            cost = length + EVENT_OVERHEAD
            if call and (
                len(call) >= MAX_CALL_EVENTS
                or size + cost > MAX_CALL_BYTES
                or timestamp - start >= MAX_SPAN_MS
            ):
                plan.calls.append(call)
                call = []
            if not call:
                size, start = 0, timestamp
            call.append(index)
            size += cost
        if call:
            plan.calls.append(call)
    return plan


def rejected_indexes(info: dict[str, Any], count: int) -> dict[int, str]:
    """Positions in a call of ``count`` events that ``rejectedLogEventsInfo`` names, with why."""
    rejected: dict[int, str] = {}
    if "tooNewLogEventStartIndex" in info:
        for position in range(max(int(info["tooNewLogEventStartIndex"]), 0), count):
            rejected[position] = REJECTION_REASONS["tooNew"]
    for key, reason in (("tooOldLogEventEndIndex", "tooOld"), ("expiredLogEventEndIndex", "expired")):
        if key in info:  # the end index is included: see the module docstring
            for position in range(min(int(info[key]) + 1, count)):
                rejected.setdefault(position, REJECTION_REASONS[reason])
    return rejected


class CloudWatchLogsTransport(AwsTransport):
    def __init__(self, settings: CloudWatchLogsSinkSettings, encoding: Encoding) -> None:
        super().__init__(make_encoder(settings.format, encoding), AwsClient("logs", settings))
        self.settings = settings
        self._names: dict[str, str] = {}
        self._creating = asyncio.Lock()

    def log_stream(self, stream: str) -> str:
        name = self._names.get(stream)
        if name is None:
            name = self._names[stream] = self.settings.log_stream.replace("{stream}", stream)
        return name

    async def write(self, records: Sequence[Record]) -> WriteResult:
        plan = plan_calls(
            [
                (self.log_stream(r.envelope.stream), r.envelope.time_ns // 1_000_000, len(r.payload))
                for r in records
            ]
        )

        async def put(indexes: Sequence[int]) -> WriteResult:
            return await self._put([records[i] for i in indexes], indexes)

        result = await send_in_parts(plan.calls, put, CALLS_AT_ONCE) if plan.calls else WriteResult()
        for index in plan.oversize:
            size = len(records[index].payload) + EVENT_OVERHEAD
            result.invalid[index] = (
                f"event is {size:,} bytes with CloudWatch's 26-byte overhead; "
                f"PutLogEvents takes at most {MAX_EVENT_BYTES:,} per event (not truncated)"
            )
        return result

    async def _put(self, records: Sequence[Record], indexes: Sequence[int]) -> WriteResult:
        """One PutLogEvents call of ``records`` (one log stream, in time order)."""
        stream = self.log_stream(records[0].envelope.stream)
        events = [
            {"timestamp": r.envelope.time_ns // 1_000_000, "message": r.payload.decode("utf-8")}
            for r in records
        ]
        try:
            answer = await self._call_put(stream, events)
        except AwsRequestError as exc:
            if len(indexes) > 1:
                half = len(indexes) // 2
                return WriteResult(resend=[list(indexes[:half]), list(indexes[half:])])
            return WriteResult(rejected={indexes[0]: f"CloudWatch Logs: {exc.code}: {exc.message}"})
        info = answer.get("rejectedLogEventsInfo") or {}
        return WriteResult(  # the event's time, not the target: never the target's refusal
            invalid={indexes[position]: why for position, why in rejected_indexes(info, len(records)).items()}
        )

    async def _call_put(self, stream: str, events: list[dict[str, Any]]) -> dict[str, Any]:
        group = self.settings.log_group
        what = f"log group {group} stream {stream}"
        params: dict[str, Any] = {"logGroupName": group, "logStreamName": stream, "logEvents": events}
        try:
            return await self.client.call("PutLogEvents", what, **params)
        except AwsRequestError as exc:
            if exc.code != "ResourceNotFoundException":
                raise
            if not self.settings.create:
                raise SinkFatalError(
                    f"PutLogEvents {what}: {exc.message} Create it, or set create = true "
                    "(needs logs:CreateLogGroup and logs:CreateLogStream)"
                ) from None
        await self._create(stream)
        try:
            return await self.client.call("PutLogEvents", what, **params)
        except AwsRequestError as exc:
            if exc.code != "ResourceNotFoundException":
                raise
            raise TransientError(f"PutLogEvents {what}: created, but not found yet: {exc.message}") from None

    async def _create(self, stream: str) -> None:
        """Create the log stream, and the group first when that is what is missing."""
        group = self.settings.log_group
        async with self._creating:
            try:
                try:
                    await self._create_quietly("CreateLogStream", logGroupName=group, logStreamName=stream)
                except AwsRequestError as exc:
                    if exc.code != "ResourceNotFoundException":
                        raise
                    await self._create_quietly("CreateLogGroup", logGroupName=group)
                    await self._create_quietly("CreateLogStream", logGroupName=group, logStreamName=stream)
            except AwsRequestError as exc:
                raise self._fatal(exc) from None

    async def _create_quietly(self, operation: str, **params: Any) -> None:
        """``operation``; "already exists" is success (another writer, or a lost answer).
        ``retention_days`` is set on a group only when this call created it."""
        what = f"log group {self.settings.log_group}"
        try:
            await self.client.call(operation, what, **params)
        except AwsRequestError as exc:
            if exc.code != "ResourceAlreadyExistsException":
                raise
            return
        if operation == "CreateLogGroup" and self.settings.retention_days is not None:
            await self.client.call(
                "PutRetentionPolicy",
                what,
                logGroupName=self.settings.log_group,
                retentionInDays=self.settings.retention_days,
            )

    def _fatal(self, exc: AwsRequestError) -> SinkFatalError:
        return SinkFatalError(f"{exc}; check log_group, log_stream and retention_days")

    async def probe(self) -> ProbeResult:
        """DescribeLogStreams on the group: credentials, region and permission, no event sent."""
        group = self.settings.log_group
        try:
            await self.client.call("DescribeLogStreams", f"log group {group}", logGroupName=group, limit=1)
        except AwsRequestError as exc:
            if exc.code != "ResourceNotFoundException":
                return ProbeResult(False, str(self._fatal(exc)))
            if not self.settings.create:
                return ProbeResult(False, f"log group {group} does not exist; create it or set create = true")
            return ProbeResult(
                True,
                f"log group {group} does not exist yet; it is created at the first delivery (create = true)",
            )
        return ProbeResult(True, f"log group {group} reachable")


class CloudWatchLogsSink(TransportSink):
    transport_class = CloudWatchLogsTransport
