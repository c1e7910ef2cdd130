"""Filter parsing (every form a client sends) and bound semantics (every answer the API may give)."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Awaitable, Callable

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strongdm import activities_pb2, roles_history_pb2

from auditstream.emulator import Bound, Emulator
from auditstream.emulator.filters import Filter, FilterError, parse_filter, parse_time_ns
from auditstream.sdm.errors import decode_status

from .rawclient import RawClient, list_all, rfc3339

NANOS = 1_000_000_000
T0 = 1_706_745_600 * NANOS  # 2024-02-01T00:00:00Z
MakeEmulator = Callable[..., Awaitable[Emulator]]


# --- time forms ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-02-01T00:00:00Z", T0),
        ("2024-02-01t00:00:00z", T0),
        ("2024-02-01T02:00:00+02:00", T0),
        ("2024-01-31T18:30:00-0530", T0),
        ("2024-02-01T00:00:00.123456789Z", T0 + 123_456_789),
        ("2024-02-01T00:00:00.5Z", T0 + 500_000_000),
        ("2024-02-01", T0),
        ("2024-02-01 00:00:00+00:00", T0),  # str(aware datetime): what the SDK's ? sends
        ("2024-02-01 00:00:00.000001+00:00", T0 + 1000),
        ("2024-02-01 00:00:00", T0),  # str(naive datetime): taken as UTC
        ("2024-02-01T00:00", T0),
    ],
)
def test_time_forms(text: str, expected: int) -> None:
    assert parse_time_ns(text) == expected


@pytest.mark.parametrize(
    "text", ["yesterday", "2024-02-30", "2024-02-01T25:00:00Z", "2024-02-01T00:00:00+24:00", ""]
)
def test_bad_times_are_rejected(text: str) -> None:
    with pytest.raises(FilterError):
        parse_time_ns(text)


@given(
    st.datetimes(
        min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2200, 1, 1), timezones=st.just(dt.UTC)
    )
)
def test_str_and_isoformat_of_any_datetime(moment: dt.datetime) -> None:
    expected = int(moment.timestamp()) * NANOS + moment.microsecond * 1000
    assert parse_time_ns(str(moment)) == expected
    assert parse_time_ns(moment.isoformat()) == expected
    assert parse_time_ns(moment.astimezone(dt.timezone(dt.timedelta(hours=-7))).isoformat()) == expected


# --- filter grammar ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        'after:"2024-02-01T00:00:00Z" before:"2024-02-02T00:00:00Z"',
        'after:"2024-02-01T00:00:00Z",before:"2024-02-02T00:00:00Z"',
        'after:"2024-02-01T00:00:00Z", before:"2024-02-02T00:00:00Z"',
        "after:2024-02-01,before:2024-02-02",
        '  after: "2024-02-01 00:00:00+00:00"   before : 2024-02-02T00:00:00Z ',
    ],
)
def test_separators_and_quoting(text: str) -> None:
    flt = parse_filter(text)
    assert (flt.after_ns, flt.before_ns, flt.equals) == (T0, T0 + 86400 * NANOS, ())


def test_equality_terms_keep_quoted_spaces_commas_and_escapes() -> None:
    flt = parse_filter('verb:"user added", actor.email:"a\\"b,c@x" type:user')
    assert flt.equals == (("verb", "user added"), ("actor.email", 'a"b,c@x'), ("type", "user"))
    assert flt.after_ns is None and flt.before_ns is None


@pytest.mark.parametrize(
    "text", ["after", "verb user", 'verb:"unterminated', "after:2024-01-01 after:2024-01-02", ":x"]
)
def test_malformed_filters(text: str) -> None:
    with pytest.raises(FilterError):
        parse_filter(text)


def test_window_under_each_bound_semantics() -> None:
    flt = Filter(after_ns=100, before_ns=200)
    assert flt.window(Bound.INCLUSIVE, Bound.EXCLUSIVE) == (100, 199)
    assert flt.window(Bound.EXCLUSIVE, Bound.INCLUSIVE) == (101, 200)
    assert Filter().window(Bound.EXCLUSIVE, Bound.EXCLUSIVE) == (None, None)


# --- against the server --------------------------------------------------------------


def activity(record_id: str, at_ns: int, verb: str = "user added") -> activities_pb2.Activity:
    record = activities_pb2.Activity(id=record_id, verb=verb)
    record.completed_at.seconds, record.completed_at.nanos = divmod(at_ns, NANOS)
    return record


@pytest.mark.parametrize("after_bound", list(Bound))
@pytest.mark.parametrize("before_bound", list(Bound))
async def test_records_exactly_at_the_bounds(
    make_emulator: MakeEmulator, after_bound: Bound, before_bound: Bound
) -> None:
    emu = await make_emulator(records=0, streams=(), after_bound=after_bound, before_bound=before_bound)
    lo = time.time_ns() - 3600 * NANOS + 123_456_789
    hi = lo + 60 * NANOS
    for name, at in {
        "below": lo - 1,
        "at-after": lo,
        "inside": lo + 1,
        "at-before": hi,
        "above": hi + 1,
    }.items():
        emu.insert("activities", activity(name, at))
    expected = {"inside"}
    if after_bound is Bound.INCLUSIVE:
        expected.add("at-after")
    if before_bound is Bound.INCLUSIVE:
        expected.add("at-before")
    listing = await list_all(emu, "activities", filter_text=f'after:"{rfc3339(lo)}" before:"{rfc3339(hi)}"')
    assert set(listing.keys()) == expected


async def test_every_time_form_selects_the_same_records(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(records=0, streams=())
    day = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0) - dt.timedelta(days=2)
    day_ns = int(day.timestamp()) * NANOS
    for i, offset in enumerate((-1, 0, 1, 3600 * NANOS, 86400 * NANOS - 1, 86400 * NANOS)):
        emu.insert("activities", activity(f"a{i}", day_ns + offset))
    next_day = day + dt.timedelta(days=1)
    forms = [
        f'after:"{rfc3339(day_ns)}" before:"{rfc3339(day_ns + 86400 * NANOS)}"',
        f'after:"{day.strftime("%Y-%m-%dT%H:%M:%S")}+00:00" before:"{next_day.isoformat()}"',
        f'after:"{day.astimezone(dt.timezone(dt.timedelta(hours=5, minutes=30))).isoformat()}",'
        f'before:"{next_day.strftime("%Y-%m-%d")}"',
        f"after:{day.date().isoformat()},before:{next_day.date().isoformat()}",
        f'after:"{day}" before:"{next_day}"',  # str(datetime), as the SDK's ? placeholders send
    ]
    results = [set((await list_all(emu, "activities", filter_text=form)).keys()) for form in forms]
    assert results[0] == {"a1", "a2", "a3", "a4"}
    assert all(result == results[0] for result in results), results


async def test_equality_filters(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(records=400, streams=("activities", "queries"))
    async with RawClient(emu) as client:
        everything = (await client.list_all("activities", limit=1000)).records
        verb = everything[0].verb
        email = next(r.actor.email for r in everything if r.actor.email)
        cases = [
            ("activities", f"verb:{_quote(verb)}", lambda r: r.verb == verb),
            ("activities", f"actor.email:{_quote(email)}", lambda r: r.actor.email == email),
            ("activities", f"verb:{_quote(verb)},actor.email:{_quote(email)}",
             lambda r: r.verb == verb and r.actor.email == email),
            ("queries", "query_category:ssh", lambda r: r.query_category == "ssh"),
            ("queries", "replayable:true", lambda r: r.replayable),
        ]  # fmt: skip
        all_queries = (await client.list_all("queries", limit=1000)).records
        for stream, text, keep in cases:
            source = everything if stream == "activities" else all_queries
            expected = sorted(r.id + str(r.completed_at.seconds) for r in source if keep(r))
            got = (await client.list_all(stream, filter_text=text, limit=7)).records
            assert sorted(r.id + str(r.completed_at.seconds) for r in got) == expected, text
            assert expected, text


def _quote(value: str) -> str:
    return json.dumps(value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("no_such_field:1", "cannot be filtered"),
        ('after:"last tuesday"', "cannot parse time"),
        ("actor:x", "plain"),
    ],
)
async def test_bad_filters_are_invalid_argument_with_status(
    emulator: Emulator, text: str, fragment: str
) -> None:
    async with RawClient(emulator) as client:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.list("activities", filter_text=text)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = decode_status(caught.value.trailing_metadata())
    assert status is not None and fragment in status.message


async def test_activities_default_to_one_week_but_history_does_not(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(records=0, streams=())
    now = time.time_ns()
    emu.insert("activities", activity("six-days", now - 6 * 86400 * NANOS))
    emu.insert("activities", activity("eight-days", now - 8 * 86400 * NANOS))
    old = roles_history_pb2.RoleHistory(activity_id="at-old")
    old.timestamp.seconds = (now - 30 * 86400 * NANOS) // NANOS
    old.role.id = "r-1"
    emu.insert("roles_history", old)
    assert set((await list_all(emu, "activities")).keys()) == {"six-days"}
    nine_days = f'after:"{rfc3339(now - 9 * 86400 * NANOS)}"'
    assert set((await list_all(emu, "activities", filter_text=nine_days)).keys()) == {
        "six-days",
        "eight-days",
    }
    assert set((await list_all(emu, "roles_history")).keys()) == {"at-old:r-1"}
