"""Replays.List: which sessions have chunks, their content, paging, errors, encryption."""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from strongdm import constants

from auditstream.emulator import Emulator
from auditstream.emulator.data.replays import REPLAYABLE_CAPTURE_TYPES
from auditstream.emulator.logkey import LogKeyError
from auditstream.formats import decryption
from auditstream.sdm.errors import decode_status
from tests.helpers import async_wait_until

from .oracle import decrypt_body, decrypt_chunk_events, load_private_key, terminal_text
from .rawclient import Listing, RawClient, build_request, list_all, signed_metadata

MakeEmulator = Callable[..., Awaitable[Emulator]]
REPLAYS = "replay_chunks"
C = constants.CaptureType


def id_filter(query_id: str) -> str:
    return f"id:{json.dumps(query_id)}"  # what the SDK's "id:?" placeholder sends


async def chunks_of(emu: Emulator, query_id: str, limit: int = 0) -> Listing:
    return await list_all(emu, REPLAYS, filter_text=id_filter(query_id), limit=limit)


async def completed_queries(emu: Emulator) -> dict[str, Any]:
    return {q.id: q for q in (await list_all(emu, "queries", limit=1000)).records if q.completed_at.seconds}


def events_of(listing: Listing) -> list[list[tuple[bytes, int]]]:
    return [[(e.data, e.duration.ToMilliseconds()) for e in chunk.events] for chunk in listing.records]


def test_the_replayable_rule_is_the_daemons() -> None:
    assert REPLAYABLE_CAPTURE_TYPES == decryption.REPLAYABLE_CAPTURE_TYPES


async def test_replayable_exactly_for_the_sessions_that_have_chunks(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(records=400)
    queries = await completed_queries(emu)
    replayable = emu.replayable_query_ids()
    assert {qid for qid, q in queries.items() if q.replayable} == replayable
    assert all(q.capture.type in REPLAYABLE_CAPTURE_TYPES for qid, q in queries.items() if qid in replayable)
    types = {queries[qid].capture.type for qid in replayable}
    assert {C.SHELL, C.K_8_S_EXEC, C.K_8_S_EXEC_TTY} <= types and types & {C.RDP_BASIC, C.RDP_ENHANCED}
    for qid in sorted(replayable)[:25]:
        assert (await chunks_of(emu, qid)).records, qid
    others = [qid for qid in queries if qid not in replayable]
    assert any(queries[qid].query_category == "ssh" for qid in others)  # single commands, scp
    for qid in [*others[:25], "s-0000000000000000"]:
        listing = await chunks_of(emu, qid)
        assert not listing.records and len(listing.pages) == 1 and not listing.pages[0].meta.next_cursor


async def test_small_pages_yield_every_chunk_once_in_order(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(records=300, max_page_size=4)
    sessions = sorted(emu.replayable_query_ids())[:12]
    assert sessions
    for qid in sessions:
        truth = emu.replay_events(qid)
        assert len(truth) >= 2, qid
        for limit in (1, 3, 0, 100):  # 0: the default page size; 100: capped at max_page_size
            listing = await chunks_of(emu, qid, limit)
            assert events_of(listing) == truth, (qid, limit)
            sizes = [len(page.chunks) for page in listing.pages]
            assert max(sizes) <= min(limit or 50, 4)
            assert all(page.meta.next_cursor for page in listing.pages[:-1])


async def test_short_pages_still_list_every_chunk(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(records=200, short_pages=0.5)
    for qid in sorted(emu.replayable_query_ids())[:8]:
        listing = await chunks_of(emu, qid, 5)
        assert events_of(listing) == emu.replay_events(qid)


@pytest.mark.parametrize(
    "filter_text",
    [
        "",
        'after:"2024-01-01T00:00:00Z"',
        'id:"s-1" after:"2024-01-01T00:00:00Z"',
        'id:"s-1" id:"s-2"',
        'query_id:"s-1"',
        'id:""',
        "id:",
        'id:"unterminated',
    ],
)
async def test_a_missing_or_invalid_filter_is_invalid_argument(emulator: Emulator, filter_text: str) -> None:
    request = build_request(REPLAYS, filter_text)
    async with RawClient(emulator) as client:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.call(REPLAYS, request, signed_metadata(emulator, REPLAYS, request))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = decode_status(caught.value.trailing_metadata())
    assert status is not None and status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]


async def test_a_cursor_is_bound_to_its_session_and_service(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(records=300)
    first, second = sorted(emu.replayable_query_ids())[:2]
    async with RawClient(emu) as client:
        page = await client.list(REPLAYS, filter_text=id_filter(first), limit=1)
        cursor = page.meta.next_cursor
        assert cursor
        activities = await client.list("activities", limit=1)
        for stream, filter_text, foreign in (
            (REPLAYS, id_filter(second), cursor),  # another session's listing
            ("activities", "", cursor),  # another service
            (REPLAYS, id_filter(first), activities.meta.next_cursor),  # a time listing's cursor
            (REPLAYS, id_filter(first), cursor[:-2] + "AA"),  # altered
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await client.list(stream, filter_text=filter_text, cursor=foreign)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_calls_are_signed_and_rate_limited(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(records=100, rate_limit=2)
    qid = min(emu.replayable_query_ids())
    request = build_request(REPLAYS, id_filter(qid))
    async with RawClient(emu) as client:
        wrong = signed_metadata(emu, REPLAYS, request, secret=b"not the secret")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.call(REPLAYS, request, wrong)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        response = await client.call(REPLAYS, request, signed_metadata(emu, REPLAYS, request))
        assert response.rate_limit.limit == 2 and response.rate_limit.bucket == "read"
        await client.call(REPLAYS, request, signed_metadata(emu, REPLAYS, request))
        with pytest.raises(grpc.aio.AioRpcError) as limited:
            await client.call(REPLAYS, request, signed_metadata(emu, REPLAYS, request))
    assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert emu.stats.requests_total[REPLAYS] == 4 and emu.stats.rate_limited == 1


async def test_terminal_sessions_read_like_a_terminal(make_emulator: MakeEmulator) -> None:
    """Every command of ``replay_commands`` is in the text a reader of the chunks sees; the
    recordings carry the hard cases a text decoder must handle."""
    emu = await make_emulator(records=400)
    seen = {"prompt": 0, "title": 0, "backspace": 0, "progress": 0, "event split": 0, "chunk split": 0}
    terminals = rdp = 0
    for qid in sorted(emu.replayable_query_ids()):
        chunks = [chunk.events for chunk in (await chunks_of(emu, qid)).records]
        raw = b"".join(e.data for events in chunks for e in events)
        commands = emu.replay_commands(qid)
        if not commands:  # RDP: opaque frames
            rdp += 1
            assert len(chunks) >= 2 and all(events for events in chunks)
            continue
        terminals += 1
        assert 3 <= len(chunks) <= 80 and all(len(events) >= 1 for events in chunks)
        text = terminal_text(raw)
        for command in commands:
            assert command in text, (qid, command)
        seen["prompt"] += b"\x1b[01;32m" in raw
        seen["title"] += b"\x1b]0;" in raw
        seen["backspace"] += b"\x08\x1b[K" in raw
        seen["progress"] += any(e.data.startswith(b"\r") and b"%[" in e.data for ev in chunks for e in ev)
        for events in chunks:
            datas = [e.data for e in events]
            seen["event split"] += sum(_cut_inside_a_character(a) for a in datas[:-1])
            seen["chunk split"] += _cut_inside_a_character(datas[-1])
    assert terminals > 20 and rdp > 2
    assert all(seen.values()), seen


def _cut_inside_a_character(data: bytes) -> bool:
    """Whether ``data`` ends inside a multi-byte UTF-8 character."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.reason == "unexpected end of data"
    return False


async def test_an_open_session_has_chunks_once_it_completes(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(records=0, streams=(), long_sessions=6, long_session_close_within=1.0)
    pending = set(emu.factory.replays.ids()) if emu.factory else set()
    assert pending and not emu.replayable_query_ids()
    qid = min(pending)
    assert not (await chunks_of(emu, qid)).records  # still recording
    await async_wait_until(lambda: emu.replayable_query_ids() == pending, 10, "sessions to complete")
    assert events_of(await chunks_of(emu, qid)) == emu.replay_events(qid)


async def test_no_query_is_encrypted_by_default(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(records=500)
    queries = (await list_all(emu, "queries", limit=1000)).records
    assert not any(q.encrypted or q.query_key or q.query_key_id for q in queries)
    assert not emu.encrypted_query_ids()
    with pytest.raises(RuntimeError):
        emu.log_private_key_pem  # noqa: B018 - the property is what is tested


async def test_encrypted_queries_and_their_chunks_open_with_the_private_key(
    make_emulator: MakeEmulator,
) -> None:
    emu = await make_emulator(records=300, encrypted_fraction=0.5)
    key = load_private_key(emu.log_private_key_pem)
    queries = await completed_queries(emu)
    encrypted = {qid: q for qid, q in queries.items() if q.encrypted}
    assert 0.35 < len(encrypted) / len(queries) < 0.65
    assert set(encrypted) <= emu.encrypted_query_ids()
    key_ids = {q.query_key_id for q in encrypted.values()}
    assert len(key_ids) == 1 and key_ids != {""}
    assert len({q.query_key for q in encrypted.values()}) == len(encrypted)  # a key per query
    sessions = 0
    for qid, q in encrypted.items():
        assert not q.HasField("capture") and not q.replayable
        plaintext = decrypt_body(key, q)
        assert plaintext == emu.encrypted_plaintext(qid)
        if q.query_category in ("ssh", "k8s", "rdp"):
            capture = json.loads(plaintext)
            assert isinstance(capture, dict) and capture["type"]
            replayable = capture["type"] in REPLAYABLE_CAPTURE_TYPES
            assert replayable == (qid in emu.replayable_query_ids())
            if replayable:
                sessions += 1
                chunks = (await chunks_of(emu, qid, 7)).records
                assert chunks and all(not c.events and c.symmetric_key == q.query_key for c in chunks)
                assert [decrypt_chunk_events(key, c) for c in chunks] == emu.replay_events(qid)
        else:  # the statement itself, as a clear record of the same category carries it
            assert plaintext and not plaintext.startswith("{")
    assert sessions >= 5
    clear = [q for q in queries.values() if not q.encrypted]
    assert clear and not any(q.query_key for q in clear)


async def test_a_missing_key_file_gets_a_new_private_key(make_emulator: MakeEmulator, tmp_path: Path) -> None:
    path = tmp_path / "org.pem"
    emu = await make_emulator(records=50, encrypted_fraction=1.0, log_key_file=str(path))
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert os.stat(path).st_mode & 0o777 == 0o600
    key = load_private_key(path.read_bytes())
    query = next(q for q in (await list_all(emu, "queries")).records if q.encrypted)
    assert decrypt_body(key, query) == emu.encrypted_plaintext(query.id)
    again = await make_emulator(records=5, encrypted_fraction=1.0, log_key_file=str(path))
    assert again.log_private_key_pem == emu.log_private_key_pem  # an existing file is used as is


async def test_a_public_key_file_encrypts_without_a_private_key(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = tmp_path / "org.pub.pem"
    public.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    emu = await make_emulator(records=50, encrypted_fraction=1.0, log_key_file=str(public))
    with pytest.raises(RuntimeError):
        emu.log_private_key_pem  # noqa: B018
    query = next(q for q in (await list_all(emu, "queries")).records if q.encrypted)
    assert decrypt_body(private, query) == emu.encrypted_plaintext(query.id)


async def test_an_unusable_key_file_fails_start(make_emulator: MakeEmulator, tmp_path: Path) -> None:
    bad = tmp_path / "not-a-key.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    with pytest.raises(LogKeyError, match=r"not-a-key\.pem") as caught:
        await make_emulator(records=5, encrypted_fraction=0.5, log_key_file=str(bad))
    assert "bm90IGEga2V5" not in str(caught.value)
