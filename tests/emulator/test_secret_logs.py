"""ManagedSecrets.Logs: generated records, paging, and both answers to a time filter."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable

import grpc
import pytest

from auditstream.emulator import Emulator, SecretLogsTimeFilter
from auditstream.emulator.data.secret_logs import ACTIONS
from auditstream.sdm.errors import decode_status

from .rawclient import RawClient, list_all, rfc3339

MakeEmulator = Callable[..., Awaitable[Emulator]]
STREAM = "managed_secret_logs"


async def test_records_look_like_secret_audit_logs(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(records=2000)  # history_count: 200 secret logs
    records = (await list_all(emu, STREAM, limit=1000)).records
    assert len(records) == 200 and {r.id for r in records} == emu.all_keys(STREAM)
    assert all(r.id.startswith("msl-") and r.created_at.seconds for r in records)
    actions = Counter(r.action for r in records)
    assert set(actions) <= {a for a, _ in ACTIONS} and len(actions) >= 5
    assert actions.most_common(1)[0][0] == "retrieve"
    assert emu.factory is not None
    vocab = emu.factory.vocab
    accounts = {p.id for p in vocab.people} | {s.id for s in vocab.services}
    secrets = {s.id: s.kind for s in vocab.managed_secrets}
    for r in records:
        assert r.account_id in accounts
        assert secrets[r.managed_secret_id] == r.secret_engine_id
    assert 0 < sum(bool(r.debug) for r in records) < len(records) * 0.2  # mostly empty


async def test_paging_lists_each_record_once(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(records=600)
    listing = await list_all(emu, STREAM, limit=7)
    assert len(listing.pages) > 5
    keys = listing.keys()
    assert max(keys.values()) == 1 and set(keys) == emu.all_keys(STREAM)


@pytest.mark.parametrize("mode", list(SecretLogsTimeFilter))
async def test_time_filter_accepted_or_refused(
    make_emulator: MakeEmulator, mode: SecretLogsTimeFilter
) -> None:
    emu = await make_emulator(records=1000, secret_logs_time_filter=mode)
    truth = sorted(emu.filter_truth(STREAM), key=lambda kt: kt[1])
    after, before = truth[len(truth) // 4][1], truth[3 * len(truth) // 4][1]
    window = {key for key, t in truth if after <= t < before}  # defaults: [after, before)
    everything = await list_all(emu, STREAM)
    assert set(everything.keys()) == {key for key, _ in truth}  # unfiltered: every record
    async with RawClient(emu) as client:
        for filter_text, expected in (
            (f'after:"{rfc3339(after)}" before:"{rfc3339(before)}"', window),
            (f'after:"{rfc3339(after)}"', {key for key, t in truth if t >= after}),
            (f'before:"{rfc3339(before)}"', {key for key, t in truth if t < before}),
        ):
            if mode is SecretLogsTimeFilter.ACCEPTED:
                assert set((await client.list_all(STREAM, filter_text=filter_text)).keys()) == expected
                continue
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await client.list(STREAM, filter_text=filter_text)
            error = caught.value
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            field = filter_text.split(":", 1)[0]
            assert error.details() == f"managed_secret_logs records cannot be filtered on '{field}'"
            status = decode_status(error.trailing_metadata())
            assert status is not None and status.message == error.details()
        # other fields are no time filter: they work in both modes
        retrieved = await client.list_all(STREAM, filter_text='action:"retrieve"')
    assert retrieved.records and all(r.action == "retrieve" for r in retrieved.records)
