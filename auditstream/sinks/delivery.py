"""The delivery machinery every sink shares: batching, coalescing, retry, dead letters, health.

A concrete sink is a :class:`Transport` (encode one envelope, write one request, say what
the receiver made of it). :class:`DeliverySink` turns it into the engine's :class:`Sink`:

* ``send()`` calls from several streams are queued together and cut into requests of at
  most ``batch.max_events`` events and ``batch.max_bytes`` bytes. A request goes out when it
  is full, when its oldest event has waited ``batch.max_age``, or on ``flush()``/``close()``.
  Each caller's ``send()`` returns when all of *its* events are acknowledged or dead-lettered.
* Order within a stream is kept: a stream's events are never in two requests at once, so a
  stream's later events wait until the request holding its earlier ones is settled (retries
  included). Requests of different streams may be in flight together (``max_in_flight``).
* Transient failures are retried by :class:`RetryPolicy` (tenacity) with the same request, so
  the only duplicates are those of a retried request the receiver had in fact taken.
* Permanent rejections go to the :class:`DeadLetter` file with the receiver's reason; a
  transport may ask to resend the rest of a request in smaller groups (:class:`WriteResult`:
  halves for an HTTP 4xx or 413, the events after the invalid one for HEC code 6), so only
  the events still refused on their own are dead-lettered.
* Unless the target, not the events, is what refuses: when every event of a stream in a
  request was refused alone with one and the same answer (at least ``SAME_ANSWER_EVENTS``
  in a row), nothing is dead-lettered and the stream's callers get a :class:`SinkFatalError`
  (see :meth:`DeliverySink._settle_refusals`); one rule for every sink, so a closed index,
  a refused schema or payload format cannot drain a stream into the dead-letter file.
* Every error text the machinery keeps or prints (health, logs, dead-letter reasons) is
  scrubbed of the sink's own credentials and of the registered secrets.
* Fatal errors (bad token, wrong index) raise :class:`SinkFatalError` to every caller whose
  events were in the request; nothing is acknowledged, so the engine keeps the data.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import structlog
import tenacity

from auditstream.ops.secrets import Secrets, config_secrets, redact
from auditstream.sinks.base import (
    BatchSettings,
    Envelope,
    ProbeResult,
    SinkError,
    SinkFatalError,
    SinkHealth,
    SinkSettingsBase,
)
from auditstream.sinks.deadletter import DeadLetter, Rejection, default_dead_letter_path
from auditstream.sinks.observer import NullObserver, SinkObserver
from auditstream.sinks.retry import HealthTracker, RetriesExhausted, RetryPolicy, TransientError

log = structlog.get_logger("auditstream.sinks")


@dataclass(frozen=True, slots=True)
class Record:
    """An envelope and its encoding for this sink (what counts against ``max_bytes``)."""

    envelope: Envelope
    payload: bytes


@dataclass
class WriteResult:
    """What the receiver made of a request. Every index not named here was accepted.

    ``rejected`` maps an index to the reason the receiver refused it for good: dead-lettered,
    unless every event of its stream in the request was refused with one and the same answer
    (then it is the target that refuses, see :meth:`DeliverySink._settle_refusals`).
    ``invalid`` maps an index to why the event can never be taken, for a property of its own
    that the sink or receiver measured (larger than any request may be, older than CloudWatch
    Logs takes): always dead-lettered, never taken for the target's refusal, since a
    backfill's events can share such a reason by the thousand.
    ``resend`` lists groups of indexes to send again, each as its own request, in order.
    """

    rejected: dict[int, str] = field(default_factory=dict)
    resend: list[list[int]] = field(default_factory=list)
    invalid: dict[int, str] = field(default_factory=dict)

    def within(self, indexes: Sequence[int]) -> WriteResult:
        """This result, about a part of a request made of the request's ``indexes`` (in
        order), in the request's indexes: what a transport that sends a request in parts
        (:func:`send_in_parts`) returns for one part."""
        return WriteResult(
            rejected={indexes[i]: reason for i, reason in self.rejected.items()},
            resend=[[indexes[i] for i in group] for group in self.resend],
            invalid={indexes[i]: reason for i, reason in self.invalid.items()},
        )

    @classmethod
    def bisect(cls, count: int, reason: str) -> WriteResult:
        """A request refused as a whole because of some of its events, receiver unknown to
        have taken any: send it again as two halves; a single event is rejected for good.

        For k bad events among n this costs at most ``1 + 2·k·ceil(log2 n)`` requests (19
        for one bad event among 500) and duplicates nothing when the receiver takes all of a
        request or none of it."""
        if count <= 1:
            return cls(rejected=dict.fromkeys(range(count), reason))
        half = count // 2
        return cls(resend=[list(range(half)), list(range(half, count))])

    @classmethod
    def one_by_one(cls, count: int, reason: str) -> WriteResult:
        """A request refused because of some of its events by a receiver that may have taken
        an unknown part of it: send every event again alone (n requests). Bisection would send
        an event taken in the first attempt again at every level where its half is refused
        once more (up to ``log2 n`` copies); alone, each arrives at most twice."""
        if count <= 1:
            return cls(rejected=dict.fromkeys(range(count), reason))
        return cls(resend=[[index] for index in range(count)])


class Transport(Protocol):
    """One receiver protocol. Raises :class:`TransientError` for what a retry may fix and
    :class:`SinkFatalError` for what needs a human."""

    @property
    def max_in_flight(self) -> int: ...

    def encode(self, envelope: Envelope) -> bytes: ...

    async def open(self) -> None: ...

    async def write(self, records: Sequence[Record]) -> WriteResult: ...

    async def probe(self) -> ProbeResult: ...

    async def close(self) -> None: ...


class _Call:
    """One ``send()``: resolved when its last event is settled."""

    __slots__ = ("future", "remaining")

    def __init__(self, future: asyncio.Future[None], remaining: int) -> None:
        self.future = future
        self.remaining = remaining

    def settle(self, count: int = 1) -> None:
        self.remaining -= count
        if self.remaining <= 0 and not self.future.done():
            self.future.set_result(None)

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


@dataclass(eq=False, slots=True)
class _Item:
    record: Record
    call: _Call
    queued_at: float
    settled: bool = False  # taken or dead-lettered: its caller counted it

    @property
    def stream(self) -> str:
        return self.record.envelope.stream

    def settle(self) -> None:
        self.settled = True
        self.call.settle()


SAME_ANSWER_EVENTS = 10
"""Events of one stream refused alone with one and the same answer, none of the stream taken
in between, that make it the target's refusal rather than the events'. One alone cannot tell,
and two bad events side by side can share a receiver's generic answer ("HTTP 400 invalid
entry"); taking them for the target's refusal would stop the stream for good on them. Ten in
a row is a target (a closed index, a schema that takes none of these events) or a systematic
fault the operator must see either way. A request of the usual hundreds of events is judged
at once; a stream moving one event at a time (the live tail) dead-letters at most nine first."""


@dataclass
class _Refusal:
    """A stream whose recent events the receiver refused, each alone, with one ``answer``."""

    answer: str
    events: int  # refused with it in a row, none of the stream taken since
    judged: bool = False  # taken for the target's refusal: the sink failed for this stream
    turn: int = 0  # which of a request's events of the stream goes alone first next time


class DeliverySink:
    """A :class:`~auditstream.sinks.base.Sink` made of a transport and the shared machinery."""

    def __init__(
        self,
        settings: SinkSettingsBase,
        transport: Transport,
        *,
        state_dir: Path = Path("."),
        observer: SinkObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = settings.name
        self.settings = settings
        self.transport = transport
        self._batch: BatchSettings = settings.batch
        self._observer: SinkObserver = observer or NullObserver()
        self._policy = RetryPolicy(settings.retry)
        self._tracker = HealthTracker(self.name, settings.retry.unhealthy_after, self._observer, clock)
        self._clock = clock
        self._secrets = Secrets(config_secrets(settings))
        self.dead_letter = DeadLetter(
            settings.dead_letter_path or default_dead_letter_path(state_dir, self.name),
            self.name,
            self._secrets,
        )
        self._pending: list[_Item] = []
        self._busy: Counter[str] = Counter()
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._flushing = 0
        self._closed = False
        self._dispatcher: asyncio.Task[None] | None = None
        self._refusals: dict[str, _Refusal] = {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    # -- the Sink contract -------------------------------------------------------------

    def routes(self, stream: str) -> bool:
        return self.settings.routes(stream)

    async def start(self) -> None:
        if not self.settings.tls.verify:
            log.warning("TLS certificate verification is off (tls.verify = false)", sink=self.name)
        await self.transport.open()
        self._dispatcher = asyncio.create_task(self._dispatch(), name=f"sink-{self.name}")

    def health(self) -> SinkHealth:
        return self._tracker.health

    async def probe(self) -> ProbeResult:
        """Works before ``start()`` too (``auditstream check`` probes without sending)."""
        try:
            result = await self.transport.probe()
        except (SinkError, ValueError, OSError) as exc:
            return ProbeResult(False, self._redact(str(exc)))
        finally:
            if self._dispatcher is None:
                await self.transport.close()
        return ProbeResult(result.ok, self._redact(result.detail))

    async def send(self, batch: Sequence[Envelope]) -> None:
        await self._enqueue(batch)

    async def send_now(self, batch: Sequence[Envelope]) -> None:
        """:meth:`send`, with what is queued (this batch too) sent without waiting for
        ``max_age``, as :meth:`flush` does: for a sink that holds batches to make larger
        objects but must not hold a stream that is behind."""
        self._flushing += 1
        self._wakeup.set()
        try:
            await self._enqueue(batch)
        finally:
            self._flushing -= 1

    async def _enqueue(self, batch: Sequence[Envelope]) -> None:
        if self._closed:
            raise SinkError(f"sink {self.name} is closed")
        if self._dispatcher is None:
            raise SinkError(f"sink {self.name} was not started")
        if not batch:
            return
        records, unencodable = self._encode(batch)
        if unencodable:
            await self._dead_letter(unencodable)
        if not records:
            return
        call = _Call(asyncio.get_running_loop().create_future(), len(records))
        now = self._clock()
        items = [_Item(record, call, now) for record in records]
        self._pending.extend(items)
        self._idle.clear()
        self._wakeup.set()
        try:
            await call.future
        except asyncio.CancelledError:
            self._drop_pending(call)
            raise

    async def flush(self) -> None:
        """Send what is queued now, regardless of ``max_age``, and wait until it is settled."""
        self._flushing += 1
        self._wakeup.set()
        try:
            await self._idle.wait()
        finally:
            self._flushing -= 1

    async def close(self) -> None:
        """Flush, then release the transport. Cancelling it abandons unacknowledged requests:
        their callers get a SinkError, so their checkpoints do not move."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._dispatcher is not None:
                await self.flush()
        finally:
            for task in [*self._tasks, *([self._dispatcher] if self._dispatcher else [])]:
                task.cancel()
            for task in [*self._tasks, *([self._dispatcher] if self._dispatcher else [])]:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            closed = SinkError(f"sink {self.name} closed before delivery")
            for item in self._pending:
                item.call.fail(closed)
            self._pending.clear()
            await self.transport.close()

    # -- queueing -----------------------------------------------------------------------

    def _encode(self, batch: Sequence[Envelope]) -> tuple[list[Record], list[Rejection]]:
        records: list[Record] = []
        unencodable: list[Rejection] = []
        for envelope in batch:
            try:
                records.append(Record(envelope, self.transport.encode(envelope)))
            except (TypeError, ValueError) as exc:
                reason = f"cannot encode: {type(exc).__name__}: {exc}"
                unencodable.append(Rejection(envelope, repr(envelope.event).encode(), reason))
        return records, unencodable

    def _drop_pending(self, call: _Call) -> None:
        self._pending = [item for item in self._pending if item.call is not call]
        self._update_idle()

    def _update_idle(self) -> None:
        if not self._pending and self._in_flight == 0:
            self._idle.set()

    def _take(self, now: float) -> tuple[list[_Item] | None, float | None]:
        """The next request if one is due, else when to look again (None: on a wakeup)."""
        if self._in_flight >= self.transport.max_in_flight or not self._pending:
            return None, None
        chosen: list[_Item] = []
        size = 0
        full = False
        for item in self._pending:
            if item.stream in self._busy:
                continue  # its earlier events are in flight: keep the stream's order
            length = len(item.record.payload)
            if chosen and size + length > self._batch.max_bytes:
                full = True
                break
            chosen.append(item)
            size += length
            if len(chosen) >= self._batch.max_events:
                full = True
                break
        if not chosen:
            return None, None
        due = chosen[0].queued_at + self._batch.max_age
        if not (full or self._flushing or self._closed or now >= due):
            return None, due
        taken = {id(item) for item in chosen}
        self._pending = [item for item in self._pending if id(item) not in taken]
        return chosen, None

    async def _dispatch(self) -> None:
        while True:
            self._wakeup.clear()
            request, due = self._take(self._clock())
            if request is not None:
                self._launch(request)
                continue
            timeout = None if due is None else max(due - self._clock(), 0.0)
            try:
                async with asyncio.timeout(timeout):
                    await self._wakeup.wait()
            except TimeoutError:
                pass

    def _launch(self, items: list[_Item]) -> None:
        self._in_flight += 1
        streams = {item.stream for item in items}
        self._busy.update(streams)

        def done(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            self._in_flight -= 1
            self._busy.subtract(streams)
            self._busy += Counter()  # drop zero counts
            self._update_idle()
            self._wakeup.set()

        task = asyncio.create_task(self._deliver(items))
        self._tasks.add(task)
        task.add_done_callback(done)

    # -- one request, from first attempt to settlement ----------------------------------

    async def _deliver(self, items: list[_Item]) -> None:
        refused: list[tuple[_Item, str]] = []  # refused alone: dead-lettered once judged
        taken: set[str] = set()  # streams of which the receiver took an event
        groups: deque[list[_Item]] = deque()
        try:
            rest = await self._try_alone_first(items, refused, taken)
            groups.extend([rest] if rest else [])
            while groups:
                group = groups.popleft()
                result = await self._write(group)
                again = [[group[i] for i in indexes] for indexes in result.resend if indexes]
                groups.extendleft(reversed(again))
                await self._settle(group, result, refused, taken)
            await self._settle_refusals(refused, taken)
        except asyncio.CancelledError:
            self._fail([item for item in items if not item.settled], SinkError("sink closed"))
            raise
        except Exception as exc:
            # every event of the request not yet settled: in a group, refused and not yet
            # judged, or waiting while one of its stream went alone first
            self._fail([item for item in items if not item.settled], exc)

    async def _settle(
        self, group: list[_Item], result: WriteResult, refused: list[tuple[_Item, str]], taken: set[str]
    ) -> None:
        """One answer: invalid events dead-lettered now, refused ones kept for the judgement at
        the end of the request, the taken ones' callers settled."""
        if result.invalid:
            await self._dead_letter(
                [self._rejection(group[i], why) for i, why in sorted(result.invalid.items())]
            )
        refused.extend((group[i], reason) for i, reason in sorted(result.rejected.items()))
        resent = {i for indexes in result.resend for i in indexes}
        for index, item in enumerate(group):
            if index in resent or index in result.rejected:
                continue
            if index not in result.invalid:
                taken.add(item.stream)
            item.settle()

    async def _try_alone_first(
        self, items: list[_Item], refused: list[tuple[_Item, str]], taken: set[str]
    ) -> list[_Item]:
        """For each stream of the request that the target was judged to refuse, send one of
        its events alone first. Refused with the same answer: the target still refuses, and
        the stream's other events are judged with it unsent (one request per try of the
        engine, not a bisection). Taken: the stream goes on as usual. The event is another
        one at each try, so a bad event refused with the target's answer cannot keep a
        stream stopped once the target is fixed."""
        rest = list(items)
        for stream in dict.fromkeys(item.stream for item in items):
            state = self._refusals.get(stream)
            if state is None or not state.judged:
                continue
            own = [item for item in rest if item.stream == stream]
            first = own[state.turn % len(own)]
            state.turn += 1
            result = await self._write([first])
            rest.remove(first)
            if result.rejected.get(0) == state.answer:
                refused.extend((item, state.answer) for item in own)
                rest = [item for item in rest if item.stream != stream]
            elif result.resend:
                rest.insert(0, first)
            else:
                await self._settle([first], result, refused, taken)
        return rest

    async def _settle_refusals(self, refused: list[tuple[_Item, str]], taken: set[str]) -> None:
        """Judge the events the receiver refused, stream by stream: dead-lettered as bad
        events, or, when every event of a stream in the request was refused with one and
        the same answer (and at least ``SAME_ANSWER_EVENTS`` in a row, counting the stream's
        requests before), the target's refusal: nothing dead-lettered, the stream's callers
        get a :class:`SinkFatalError` (health failed, data kept, the engine tries again).

        A closed index, a refused mapping or schema, a receiver that refuses every event the
        same way would otherwise have every event dead-lettered one at a time, the checkpoint
        moving on, the whole stream drained into the dead-letter file."""
        by_stream: dict[str, list[tuple[_Item, str]]] = {}
        for item, reason in refused:
            by_stream.setdefault(item.stream, []).append((item, reason))
        for stream in taken - by_stream.keys():
            self._refusals.pop(stream, None)
        letters: list[tuple[_Item, str]] = []
        for stream, entries in by_stream.items():
            answers = {reason for _, reason in entries}
            before = self._refusals.pop(stream, None)
            if stream in taken or len(answers) > 1:
                letters += entries
                continue
            (answer,) = answers
            events = len(entries) + (before.events if before is not None and before.answer == answer else 0)
            turn = before.turn if before is not None and before.answer == answer else 0
            state = self._refusals[stream] = _Refusal(answer, events, events >= SAME_ANSWER_EVENTS, turn)
            if not state.judged:
                letters += entries
                continue
            error = SinkFatalError(
                self._redact(
                    f"the receiver refused every event of stream {stream} ({events} in a row, each "
                    f"alone) with the same answer, so the target refuses them, not the events: "
                    f"{answer}; nothing was dead-lettered, the data is kept: fix the target (a closed "
                    "or read-only index, a mapping, a schema, the receiver's configuration) and "
                    "delivery resumes"
                )
            )
            self._tracker.fatal(str(error))
            log.error("the target refuses every event; data kept", sink=self.name, error=str(error))
            self._fail([item for item, _ in entries], error)
        if letters:
            await self._dead_letter([self._rejection(item, reason) for item, reason in letters])
            for item, _ in letters:
                item.settle()

    @staticmethod
    def _rejection(item: _Item, reason: str) -> Rejection:
        return Rejection(item.record.envelope, item.record.payload, reason)

    def _fail(self, items: Sequence[_Item], exc: BaseException) -> None:
        calls = {id(item.call): item.call for item in items}
        for call in calls.values():
            call.fail(exc)
            self._drop_pending(call)

    async def _dead_letter(self, rejections: list[Rejection]) -> None:
        await self.dead_letter.write(rejections)
        self._observer.dead_lettered(self.name, len(rejections))
        log.warning(
            "events dead-lettered",
            sink=self.name,
            count=len(rejections),
            reason=self._redact(rejections[0].reason),
            path=str(self.dead_letter.path),
        )

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets)

    def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        error = self._redact(str(exc))
        self._tracker.failure(error)
        self._observer.retried(self.name, error)
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning(
            "sink delivery failed; retrying",
            sink=self.name,
            error=error,
            attempt=state.attempt_number,
            retry_in_seconds=round(wait, 3),
        )

    async def _write(self, group: list[_Item]) -> WriteResult:
        records = [item.record for item in group]
        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(TransientError),
            wait=self._policy.wait,
            stop=self._policy.stop(),
            before_sleep=self._before_sleep,
            reraise=True,
        )
        started = self._clock()
        try:
            async for attempt in retrying:
                with attempt:
                    started = self._clock()
                    result = await self.transport.write(records)
        except TransientError as exc:
            message = self._redact(f"gave up after {self.settings.retry.max_elapsed:g}s of retries: {exc}")
            self._tracker.failure(message)
            raise RetriesExhausted(message) from None
        except SinkFatalError as exc:
            error = self._redact(str(exc))
            self._tracker.fatal(error)
            log.error("sink failed fatally; data kept", sink=self.name, error=error)
            raise
        except Exception as exc:
            self._tracker.failure(self._redact(f"{type(exc).__name__}: {exc}"))
            raise
        if len(result.rejected) + len(result.invalid) + sum(map(len, result.resend)) < len(records):
            self._tracker.success()  # the receiver took something: not while it refuses all
        nbytes = sum(len(record.payload) for record in records)
        self._observer.request_sent(self.name, len(records), nbytes, self._clock() - started)
        return result


class TransportSink(DeliverySink):
    """A sink type is a settings model plus a transport; subclasses only name the transport.

    Keeps every concrete sink's constructor (settings, CEF settings, state directory,
    observer) in one place instead of one copy per sink module.
    """

    transport_class: ClassVar[type[Any]]  # a Transport class taking (settings, cef)

    def __init__(
        self,
        settings: SinkSettingsBase,
        cef: Any = None,
        *,
        state_dir: Path = Path("."),
        observer: SinkObserver | None = None,
    ) -> None:
        super().__init__(
            settings, type(self).transport_class(settings, cef), state_dir=state_dir, observer=observer
        )


PartWriter = Callable[[Sequence[int]], Awaitable[WriteResult]]


async def send_in_parts(parts: Sequence[Sequence[int]], write: PartWriter, concurrency: int) -> WriteResult:
    """Send one request of the delivery machinery as several API calls (``parts``, lists of
    the request's indexes), at most ``concurrency`` at once, and merge what they say: the
    sinks whose receivers take a request in pieces (S3 objects, CloudWatch Logs calls, Azure
    Monitor calls) share this one way of settling it.

    Why not retry the whole request when one call fails: the calls that succeeded would be
    sent again (duplicates in CloudWatch Logs, re-uploads in S3). Instead the parts that
    failed transiently come back as ``resend`` groups: the machinery sends each again as its
    own request (with backoff once it fails again), and settles the caller's ``send()`` only
    when every event of it is delivered or dead-lettered. If every part failed transiently
    the first error is raised, so the machinery backs off before the next attempt. A fatal
    error raises: nothing of the request is acknowledged and the engine keeps the batch."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(part: Sequence[int]) -> WriteResult:
        async with semaphore:
            return await write(part)

    outcomes = await asyncio.gather(*(one(part) for part in parts), return_exceptions=True)
    merged = WriteResult()
    first: TransientError | None = None
    failed = 0
    for part, outcome in zip(parts, outcomes, strict=True):
        if isinstance(outcome, TransientError):
            first = first or outcome
            failed += 1
            merged.resend.append(list(part))
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            merged.rejected.update(outcome.rejected)
            merged.invalid.update(outcome.invalid)
            merged.resend.extend(outcome.resend)
    if first is not None and failed == len(parts):
        raise first
    return merged
