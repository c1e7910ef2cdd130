"""The ``replays`` stream: what a person typed and saw, one event per replay chunk.

The stream lists the Queries service with the same windows, marks and long-running-query
tracking as ``queries`` (its own cursor and checkpoint), and expands every completed
session that has a replay into its ``Replays.List`` chunks:

- a text session (SSH shell, ``kubectl exec``): one event per chunk, in the Log Stream
  replay layout (``queryUUID``, ``chunkId``, ``events`` [{``durationMs``, ``data``}]) plus
  the session's account, resource and capture fields and ``text``, the terminal output
  decoded and masked (formats.replaytext). A chunk whose bytes fed a line that masking
  changed ships its events without ``data`` (``dataOmitted``): no secret survives in
  base64 either. An encrypted session's chunks are decrypted with the query's key;
- an RDP session: one metadata event, no chunks fetched (its capture is graphical).

Keys. A chunk is ``<query id>#<index>``; the session itself is ``<query id>``, acknowledged
with its last chunk. A session whose key is delivered is not fetched again (the sweep lists
every query a second time); a session interrupted by a crash is fetched again and its
delivered chunks are dropped by key, so a resume loses no chunk and re-sends none beyond
the last unacknowledged batch. Chunk fetches are catch-up calls (``urgent=False``): live
polls of every stream go first. Memory is bounded by the poller's queue: a session is
streamed page by page, each page one batch.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from auditstream.engine.poller import Batch, ListedWindow, StreamPoller
from auditstream.formats.decryption import DecryptionError, QueryDecryptor
from auditstream.formats.events import Event
from auditstream.formats.masking import Masker, SessionMasker
from auditstream.formats.protovalues import rfc3339
from auditstream.formats.replaytext import ChunkText, ReplayAssembler
from auditstream.sdm.registry import NANOS_PER_SECOND, query_is_open
from auditstream.sinks.base import Envelope

log = structlog.get_logger("auditstream.replays")

NANOS_PER_MS = 1_000_000
BATCH_EVENTS = 50  # chunk events handed to the sinks at once (the memory bound is the queue's)
SESSIONS_AT_ONCE = 4  # sessions whose chunks are fetched concurrently (each a page at a time)
RDP_TYPES = frozenset({"rdp-basic", "rdp-enhanced"})

# The session fields every chunk event repeats, so one event answers "who did what where".
SESSION_FIELDS = (
    "accountId",
    "accountEmail",
    "accountFirstName",
    "accountLastName",
    "accountTags",
    "resourceId",
    "resourceName",
    "resourceType",
    "resourceTags",
    "queryCategory",
    "remoteIdentityUsername",
    "identityAliasUsername",
    "target",
    "sourceIp",
    "clientIp",
    "egressNodeId",
    "authenticationId",
    "capture",
    "encrypted",
    "decryption",
    "decryptionError",
)


def chunk_key(query_id: str, index: int) -> str:
    return f"{query_id}#{index}"


@dataclass(frozen=True)
class RawChunk:
    """One chunk as fetched: its events' bytes and durations, decrypted if it was encrypted.

    ``readable`` is False for a chunk that stayed encrypted (no key, or a key that does not
    open it): its bytes go out as received, and none of them is decoded as terminal text.
    """

    events: list[tuple[bytes, int]]
    readable: bool = True
    error: str | None = None  # why the chunk could not be decrypted


ChunkReader = Callable[[Any, Event], RawChunk]


def plain_chunk(chunk: Any, session: Event) -> RawChunk:
    """A chunk of an unencrypted session: its events as the API gives them."""
    events = [
        (bytes(e.data), e.duration.seconds * 1000 + e.duration.nanos // NANOS_PER_MS) for e in chunk.events
    ]
    if not events and chunk.data:
        return RawChunk([(bytes(chunk.data), 0)])  # a server that sends the bytes as one block
    return RawChunk(events)


def chunk_reader(decryptor: QueryDecryptor | None) -> ChunkReader:
    """Reads plain chunks as they are and encrypted ones with their session's query key."""

    def read(chunk: Any, session: Event) -> RawChunk:
        if not session.get("encrypted"):
            return plain_chunk(chunk, session)
        as_received = [(bytes(chunk.data), 0)]
        if decryptor is None or session.get("decryption") != "decrypted":
            reason = session.get("decryptionError") or "no log_private_key_file configured"
            return RawChunk(as_received, readable=False, error=f"encrypted replay not decrypted: {reason}")
        try:
            return RawChunk(decryptor.replay_events(str(session.get("queryKey")), bytes(chunk.data)))
        except DecryptionError as exc:
            return RawChunk(
                as_received, readable=False, error=f"encrypted replay not decrypted: {exc.reason}"
            )

    return read


def replay_assembler(masker: Masker | None) -> Callable[[], ReplayAssembler]:
    """A new session's text assembler, masking with a session's own state (a private key
    pasted over several chunks stays masked: formats.masking.SessionMasker)."""
    if masker is None:
        return lambda: ReplayAssembler(None)
    return lambda: ReplayAssembler(SessionMasker(masker))


class ReplayPoller(StreamPoller):
    """A ``StreamPoller`` over Queries whose new records are sessions to expand."""

    # A backfill too takes its windows in turn: what is staged (``_stage``) is shared by
    # the stream's listing, and a listing that fails gives back every staged claim, which
    # would include those of a window listed beside it.
    lists_in_any_order = False

    def __init__(
        self,
        *args: Any,
        read_chunk: ChunkReader = plain_chunk,
        new_assembler: Callable[[], ReplayAssembler] = lambda: ReplayAssembler(None),
        # new_assembler: masking of the text (a ReplayAssembler with the masker's ``mask``)
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._read_chunk = read_chunk
        self._new_assembler = new_assembler
        self._staged = Batch([], [], [])
        self.sessions_expanded = 0

    async def _queue_new(self, records: list[Any], listed: ListedWindow | None = None) -> int:
        """Expand every new completed session of the page; open ones go to the tracker.

        Up to ``SESSIONS_AT_ONCE`` sessions are fetched concurrently: each listing of chunks
        is a round trip, and one after the other a backlog of sessions would drain at a few
        a second. What is ready is staged and handed over ``BATCH_EVENTS`` events at a time
        (and at the end of the page), so short sessions share a delivery and a checkpoint
        transaction instead of costing two each. If listing fails part-way, every claim
        staged and not handed over is given back: those sessions are fetched again, nothing
        is skipped.
        """
        try:
            opened = [r for r in records if query_is_open(r)]
            if opened and self._tracker is not None:
                self._stage([], [], opened)
            facts_of = self.spec.record_facts
            sessions = []
            for record in records:
                if query_is_open(record):
                    continue
                key, time_ns, relist_ns = facts_of(record)
                self._client.clock.observe_record_time(time_ns, self.spec.service)
                if self._keys.claim(key):
                    sessions.append((record, key, time_ns, relist_ns))
                else:
                    self._observer.duplicates_dropped(self.spec.name, 1)
                    if listed is not None and self._keys.in_flight(key):
                        listed.waits.add(key)  # the re-check loop's: delivered before the window completes
            queued = await self._expand_all(sessions)
            await self._flush()
        except BaseException:
            self._unstage()
            raise
        return queued

    async def _expand_all(self, sessions: list[tuple[Any, str, int, int]]) -> int:
        """Expand the claimed sessions, a few at a time; the first failure cancels the rest
        (and every session not finished gives its claim back)."""
        slots = asyncio.Semaphore(SESSIONS_AT_ONCE)

        async def expand(record: Any, key: str, time_ns: int, relist_ns: int) -> int:
            try:
                async with slots:
                    done = await self._expand(record, key, time_ns, relist_ns)
            except BaseException:
                self._keys.release(key)  # listed again after the retry: fetched again
                raise
            if done is None:  # stopped part-way: fetched again at the next start
                self._keys.release(key)
                return 0
            return done

        tasks = [asyncio.create_task(expand(*session)) for session in sessions]
        try:
            return sum(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    def _stage(self, envelopes: list[Envelope], acks: list[tuple[str, int]], records: list[Any]) -> None:
        staged = self._staged
        staged.envelopes += envelopes
        staged.acks += acks
        staged.records += records

    async def _flush(self, *, unless_below: int = 0) -> None:
        staged = self._staged
        if len(staged.envelopes) < unless_below or not (staged.envelopes or staged.acks or staged.records):
            return
        self._staged = Batch([], [], [])
        await self._queue.put(staged)
        self._observer.queue_depth(self.spec.name, self._queue.qsize())

    def _unstage(self) -> None:
        """Give back the claims of what was staged and never handed over."""
        for key, _ in self._staged.acks:
            self._keys.release(key)
        self._staged = Batch([], [], [])

    async def _expand(self, record: Any, key: str, time_ns: int, relist_ns: int) -> int | None:
        """Queue the session's events; how many, or None when stopped part-way."""
        session = self._normalizer(record)
        capture = session.get("capture") or {}
        capture_type = capture.get("type") if isinstance(capture, dict) else None
        replayable = bool(session.get("replayable")) or (
            session.get("decryption") in ("no_key", "failed")
            and session.get("queryCategory") in ("ssh", "kubernetes", "rdp")
        )
        if not replayable:
            self._stage([], [(key, relist_ns)], [record])
            return 0
        base = session_fields(session)
        if capture_type in RDP_TYPES:
            event = {**base, "logType": self.spec.name, "id": key, "queryUUID": key, "chunkId": None}
            event["timestamp"] = session.get("timestamp")
            self._stage([Envelope(self.spec.name, key, time_ns, event)], [(key, relist_ns)], [record])
            return 1
        self.sessions_expanded += 1
        return await self._fetch_chunks(record, session, base, key, time_ns, relist_ns)

    async def _fetch_chunks(
        self, record: Any, session: Event, base: Event, query_id: str, start_ns: int, relist_ns: int
    ) -> int | None:
        assembler = self._new_assembler()
        timeline = _Timeline(start_ns)
        raw: dict[int, RawChunk] = {}  # chunks held by the assembler until their text is complete
        index = 0
        sent = 0
        async for page in self._client.replay_chunks(query_id):
            ready: list[ChunkText] = []
            for chunk in page.records:
                content = self._read_chunk(chunk, session)
                raw[index] = content
                ready += assembler.add(
                    index, [data for data, _ in content.events] if content.readable else []
                )
                index += 1
            sent += await self._queue_chunks(ready, raw, timeline, base, query_id, relist_ns)
            if self._stop.is_set():
                return None
        ready = assembler.finish()
        sent += await self._queue_chunks(ready, raw, timeline, base, query_id, relist_ns, session=record)
        return sent

    async def _queue_chunks(
        self,
        ready: Sequence[ChunkText],
        raw: dict[int, RawChunk],
        timeline: _Timeline,
        base: Event,
        query_id: str,
        relist_ns: int,
        *,
        session: Any = None,
    ) -> int:
        """One batch: the chunks whose text is complete, less those already delivered; the
        session's own key goes with the last batch."""
        envelopes: list[Envelope] = []
        acks: list[tuple[str, int]] = []
        name = self.spec.name
        for text in ready:
            content = raw.pop(text.index)
            chunk_time = timeline.advance(content.events)
            key = chunk_key(query_id, text.index)
            if not self._keys.claim(key):
                continue  # delivered before a crash: its bytes fed the text, it is not sent again
            event = chunk_event(base, name, query_id, text, content, chunk_time)
            envelopes.append(Envelope(name, key, chunk_time, event))
            acks.append((key, relist_ns))
        if session is not None:  # the last batch: the session is done once it is acknowledged
            acks.append((query_id, relist_ns))
        self._stage(envelopes, acks, [session] if session is not None else [])
        await self._flush(unless_below=BATCH_EVENTS)
        return len(envelopes)


class _Timeline:
    """A chunk's time: the session's start plus the durations of every event before it."""

    def __init__(self, start_ns: int) -> None:
        self._now_ns = start_ns

    def advance(self, events: Sequence[tuple[bytes, int]]) -> int:
        at = self._now_ns
        self._now_ns += sum(duration for _, duration in events) * NANOS_PER_MS
        return at


def session_fields(session: Event) -> Event:
    """The session's fields every chunk event carries (masked already, like the session)."""
    base: Event = {"formatVersion": session.get("formatVersion"), "queryId": session.get("queryId")}
    for name in SESSION_FIELDS:
        if name in session:
            base[name] = session[name]
    if session.get("maskedSecrets"):
        base["sessionMaskedSecrets"] = session["maskedSecrets"]
    return base


def chunk_event(
    base: Event, log_type: str, query_id: str, text: ChunkText, content: RawChunk, time_ns: int
) -> Event:
    """One chunk in the Log Stream replay layout, with the session's fields and its text."""
    event: Event = {
        "logType": log_type,
        "formatVersion": base.get("formatVersion"),
        "id": chunk_key(query_id, text.index),
        "timestamp": _rfc3339(time_ns),
        **base,
        "queryUUID": query_id,
        "chunkId": text.index,
        "events": list(_events(content.events, keep_data=text.data_safe)),
        "text": text.text,
    }
    if not text.data_safe:
        event["dataOmitted"] = True
    if text.masked_rules:
        event["maskedSecrets"] = sorted(text.masked_rules)
    if content.error is not None:
        event["replayError"] = content.error
    return event


def _events(events: Sequence[tuple[bytes, int]], *, keep_data: bool) -> Iterator[dict[str, Any]]:
    for data, duration_ms in events:
        item: dict[str, Any] = {"durationMs": duration_ms}
        if keep_data:
            item["data"] = base64.b64encode(data).decode("ascii")
        yield item


def _rfc3339(time_ns: int) -> str:
    return rfc3339(*divmod(time_ns, NANOS_PER_SECOND))
