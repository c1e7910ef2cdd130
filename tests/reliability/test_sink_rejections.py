"""Receivers that refuse some events, and receivers that quote our credentials back.

The daemon runs as its own process (``auditstream run``) against the emulator's backlog:

* Splunk HEC answering code 6 for about one event in 15: with ``invalid-event-number`` (as
  Splunk, which has indexed the events before it) and without (nothing says what was
  indexed). Every good event must arrive, at most twice; exactly the bad ones are
  dead-lettered. Before the fix, 4,824 good events arrived 62,481 times (13x).
* An HTTP receiver answering 400 to any request holding one particular event, inside a
  request of 500: exactly that event is dead-lettered, the 499 others delivered once.
  Before the fix, all 500 were dead-lettered.
* Three receivers (HTTP Basic, HTTP Bearer, HEC) quoting the request's ``Authorization``
  header in every error body, answering 503 until each sink is failed, then 400 / code 6 for
  some events: no credential, in any form, in ``/readyz``, ``/metrics``, the daemon's log,
  ``auditstream check`` or the dead-letter files.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import datetime as dt
import json
import zlib
from collections import deque
from pathlib import Path
from typing import Any

import pytest

from auditstream.emulator import Emulator, EmulatorOptions
from tests.e2e.support import daemon_config_document, truth_keys
from tests.helpers import async_wait_until, free_port
from tests.ops.support import Run, parse_metrics, run_check, write_config
from tests.peers.hec import HecReceiver
from tests.peers.http_receiver import HttpReceiver
from tests.reliability.support import CLI, duplicates

pytestmark = pytest.mark.reliability

STREAMS = ["activities", "queries"]
HEC_TOKEN = "4a6e1f0c-hec-token-reliability-5521"
PASSWORD = 'basic-pa"ss\\word-4711'  # a JSON echo escapes the quote and the backslash
BEARER = 'bearer-tok"en\\9e2b/reliability'
RETRY = {"initial": "50ms", "maximum": "200ms", "unhealthy_after": "1s"}

Key = tuple[str, str]


def bad(stream: str, key: str) -> bool:
    """About one record in 15, the same ones at every receiver."""
    return zlib.crc32(f"{stream}:{key}".encode()) % 15 == 0


def event_key(event: dict[str, Any]) -> Key:
    return event["logType"], event["id"]


def dead_letters(tmp_path: Path, sink: str) -> collections.Counter[Key]:
    path = tmp_path / "state" / "dead-letter" / f"{sink}.jsonl"
    if not path.exists():
        return collections.Counter()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return collections.Counter((line["stream"], line["key"]) for line in lines)


def document(emu: Emulator, tmp_path: Path, sinks: list[dict[str, Any]], **streams: Any) -> dict[str, Any]:
    """The daemon's config: the whole backlog in one slice, pages (and requests) of 500."""
    doc = daemon_config_document(
        emu.address, emu.options.access_key, emu.options.secret_key, tmp_path, slice="30d", **streams
    )
    doc["source"]["page_size"] = 500
    doc["sinks"] = sinks
    return doc


async def run_until(run: Run, settled: Any, what: str) -> None:
    """Start the daemon, wait for ``settled()``, stop it; it must exit 0."""
    await run.start()
    try:
        await async_wait_until(settled, 180, what)
    finally:
        code = await run.stop()
    assert code == 0, run.output()[-3000:]


@pytest.mark.parametrize("names_the_event", [True, False], ids=["splunk", "no-invalid-event-number"])
async def test_hec_code_6_for_k_bad_events(tmp_path, figures, names_the_event):
    records = 1500 if names_the_event else 500  # without a number, each event goes alone once
    options = EmulatorOptions(seed=61, records=records)
    async with Emulator(options) as emu, HecReceiver(token=HEC_TOKEN) as hec:
        hec.names_invalid_event = names_the_event
        hec.reject_when = lambda envelope: bad(*event_key(envelope["event"]))
        sink = {"type": "splunk_hec", "name": "hec", "url": hec.base_url, "token": HEC_TOKEN, "retry": RETRY}
        doc = document(emu, tmp_path, [sink], include=STREAMS)
        run = Run(write_config(tmp_path / "config.toml", doc), "", tmp_path)
        truth = truth_keys(emu, STREAMS)
        wrong = {key for key in truth if bad(*key)}

        def received() -> collections.Counter[Key]:
            return collections.Counter(event_key(envelope["event"]) for envelope in hec.events)

        await run_until(
            run, lambda: set(received()) | set(dead_letters(tmp_path, "hec")) >= truth, "every record settled"
        )
    counts = received()
    dead = dead_letters(tmp_path, "hec")
    lost = truth - wrong - set(counts)
    figures(
        load=f"{len(truth):,} records of 2 streams, requests of up to 500",
        faults=f"HEC code 6 {'with' if names_the_event else 'without'} invalid-event-number for "
        f"{len(wrong)} events (1 in 15; {hec.refused} requests refused); "
        f"{len(dead)} dead-lettered, good events at most {max(counts.values())}x",
        records=len(truth),
        lost=len(lost),
        duplicates=duplicates(counts),
    )
    assert not lost
    assert dead == collections.Counter(wrong), "exactly the bad events, each once"
    assert not set(counts) & wrong
    assert max(counts.values()) <= 2, counts.most_common(3)
    if names_the_event:
        assert duplicates(counts) == 0  # Splunk indexed the events before each bad one


async def test_http_400_for_one_event_of_500(tmp_path, figures):
    options = EmulatorOptions(seed=62, records=2000)
    async with Emulator(options) as emu, HttpReceiver() as receiver:
        ordered = sorted(emu.truth("activities"), key=lambda key_time: key_time[1])
        poison = ("activities", ordered[750][0])  # inside the second request of 500
        receiver.reject_when = lambda item: event_key(item) == poison
        sink = {
            "type": "http",
            "name": "collector",
            "url": receiver.url,
            "batch": {"max_events": 500},
            "retry": RETRY,
        }
        doc = document(emu, tmp_path, [sink], include=["activities"])
        run = Run(write_config(tmp_path / "config.toml", doc), "", tmp_path)
        truth = truth_keys(emu, ["activities"])

        def received() -> collections.Counter[Key]:
            return collections.Counter(event_key(item) for item in receiver.items)

        await run_until(
            run,
            lambda: set(received()) | set(dead_letters(tmp_path, "collector")) >= truth,
            "every record settled",
        )
    counts = received()
    dead = dead_letters(tmp_path, "collector")
    figures(
        load=f"{len(truth):,} activities, requests of 500",
        faults=f"HTTP 400 for any request holding one event (first refused request: "
        f"{receiver.refused_sizes[0]} events); bisected in {len(receiver.refused_sizes)} refused "
        f"and {receiver.attempts - len(receiver.refused_sizes)} accepted requests; "
        f"{sum(dead.values())} dead-lettered",
        records=len(truth),
        lost=len(truth - {poison} - set(counts)),
        duplicates=duplicates(counts),
    )
    assert receiver.refused_sizes[0] == 500
    assert dead == collections.Counter([poison])
    assert set(counts) == truth - {poison} and duplicates(counts) == 0
    assert len(receiver.refused_sizes) <= 1 + 9  # one refused request per bisection level (log2 500)


def credential_forms() -> dict[str, str]:
    """Every credential in every form an echo could carry it in, by name."""
    pair = f"collector:{PASSWORD}"
    forms = {
        "basic password": PASSWORD,
        "basic password (JSON)": json.dumps(PASSWORD)[1:-1],
        "basic pair": pair,
        "basic header value": base64.b64encode(pair.encode()).decode(),
        "bearer token": BEARER,
        "bearer token (JSON)": json.dumps(BEARER)[1:-1],
        "hec token": HEC_TOKEN,
    }
    for name, value in list(forms.items()):
        forms[f"{name} (base64)"] = base64.b64encode(value.encode()).decode()
    return forms


async def test_receivers_echoing_authorization_leak_no_credential(tmp_path, figures):
    options = EmulatorOptions(seed=63, records=300)
    basic, bearer = HttpReceiver(), HttpReceiver()
    hec = HecReceiver(token=HEC_TOKEN)
    async with Emulator(options) as emu, basic, bearer, hec:
        for receiver in (basic, bearer):
            receiver.echo_authorization = True
            receiver.faults.fail_with = deque([503] * 1_000_000)
        hec.echo_authorization = True
        hec.busy = True
        common = {"retry": RETRY, "batch": {"max_events": 100}}
        http = {"type": "http", "probe_method": "GET", **common}
        sinks = [
            {**http, "name": "basic", "url": basic.url, "auth": "basic", "username": "collector",
             "password": PASSWORD},
            {**http, "name": "bearer", "url": bearer.url, "auth": "bearer", "token": BEARER},
            {"type": "splunk_hec", "name": "hec", "url": hec.base_url, "token": HEC_TOKEN, **common},
        ]  # fmt: skip
        doc = document(emu, tmp_path, sinks, include=STREAMS)
        doc["metrics"] = {"listen": f"127.0.0.1:{free_port()}"}
        doc["engine"] = {"sink_failure_pause": "0.2s"}
        config = write_config(tmp_path / "config.toml", doc)
        run = Run(config, doc["metrics"]["listen"], tmp_path)
        truth = truth_keys(emu, STREAMS)
        wrong = {key for key in truth if bad(*key)}
        await run.start()
        try:
            await async_wait_until(run.answering, 30, "the daemon's HTTP server")

            async def every_sink_failed() -> dict[str, Any] | None:
                status, text = await run.get("/readyz")
                body = json.loads(text)
                states = {name: sink["state"] for name, sink in body["sinks"].items()}
                return body if status == 503 and set(states.values()) == {"failed"} else None

            failed = await async_wait_until(every_sink_failed, 30, "/readyz: every sink failed")
            assert all("[redacted]" in sink["error"] for sink in failed["sinks"].values()), failed
            metrics = parse_metrics((await run.get("/metrics"))[1])
            assert metrics.value("auditstream_sink_state", sink="hec", state="failed") == 1

            # The receivers come back, refusing about one event in 15 (400 / code 6).
            for receiver in (basic, bearer):
                receiver.reject_when = lambda item: bad(*event_key(item))
                receiver.faults.fail_with.clear()
            hec.reject_when = lambda envelope: bad(*event_key(envelope["event"]))
            hec.busy = False

            def held() -> dict[str, set[Key]]:
                return {
                    "basic": {event_key(item) for item in basic.items},
                    "bearer": {event_key(item) for item in bearer.items},
                    "hec": {event_key(envelope["event"]) for envelope in hec.events},
                }

            def settled() -> bool:
                return all(got | set(dead_letters(tmp_path, name)) >= truth for name, got in held().items())

            await async_wait_until(settled, 120, "every record delivered or dead-lettered at every sink")
            await run.get("/readyz")
            await run.get("/metrics")
        finally:
            code = await run.stop()
        assert code == 0, run.output()[-3000:]

        for receiver in (basic, bearer):
            receiver.probe_failure = 503
        hec.busy = True
        check_code, check_output = await run_check(config)
    assert check_code == 1 and check_output.count("FAIL  sink") == 3, check_output
    letters = {name: tmp_path / "state" / "dead-letter" / f"{name}.jsonl" for name in held()}
    outputs = {
        "/readyz and /metrics": "\n".join(run.served),
        "daemon log": run.output(),
        "auditstream check": check_output,
        **{f"dead letters of {name}": path.read_text() for name, path in letters.items()},
    }
    echoed = [where for where, text in outputs.items() if "[redacted]" in text]
    forms = credential_forms()
    leaks = [f"{name} in {where}" for where, text in outputs.items() for name in forms if forms[name] in text]
    missing = {name: len(truth - wrong - got) for name, got in held().items()}
    figures(
        load=f"{len(truth):,} records of 2 streams to 3 sinks",
        faults=f"3 receivers (HTTP Basic, HTTP Bearer, HEC) quoting Authorization in 503 answers "
        f"until every sink failed, then 400 / code 6 for {len(wrong)} events: {len(leaks)} of "
        f"{len(forms)} credential forms leaked into /readyz and /metrics "
        f"({len(run.served)} answers), the log, check and {len(letters)} dead-letter files",
        records=len(truth),
        lost=sum(missing.values()),
        duplicates=0,
    )
    assert leaks == []
    assert set(echoed) >= {"/readyz and /metrics", "daemon log", "auditstream check"}, echoed
    assert all(f"dead letters of {name}" in echoed for name in letters), echoed
    assert missing == {"basic": 0, "bearer": 0, "hec": 0}
    for name in letters:
        assert dead_letters(tmp_path, name) == collections.Counter(wrong), name


async def test_a_backfill_through_an_echoing_receiver_leaks_no_credential(tmp_path, figures):
    """``auditstream backfill`` goes through the same start-up path as ``run``: its log lines,
    its summary and its dead letters are scrubbed too (before, a backfill registered no secret
    for scrubbing at all)."""
    options = EmulatorOptions(seed=64, records=300)
    receiver = HttpReceiver()
    async with Emulator(options) as emu, receiver:
        receiver.echo_authorization = True
        receiver.faults.fail_with = deque([503] * 5)  # a few refusals quoting the header: logged
        receiver.reject_when = lambda item: bad(*event_key(item))  # 400s quoting it: dead letters
        sink = {
            "type": "http", "name": "basic", "url": receiver.url, "auth": "basic",
            "username": "collector", "password": PASSWORD, "retry": RETRY, "batch": {"max_events": 100},
        }  # fmt: skip
        doc = document(emu, tmp_path, [sink], include=STREAMS)
        config = write_config(tmp_path / "config.toml", doc)
        truth = truth_keys(emu, STREAMS)
        wrong = {key for key in truth if bad(*key)}
        oldest = min(t for stream in STREAMS for _, t in emu.truth(stream)) // 1_000_000_000 - 60
        since = dt.datetime.fromtimestamp(oldest, dt.UTC).isoformat()
        proc = await asyncio.create_subprocess_exec(
            *CLI, "backfill", "--config", str(config), "--from", since, "--progress",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 180)
    letters = (tmp_path / "state" / "dead-letter" / "basic.jsonl").read_text()
    outputs = {"stdout": stdout.decode(), "stderr": stderr.decode(), "dead letters": letters}
    forms = credential_forms()
    leaks = [f"{name} in {where}" for where, text in outputs.items() for name in forms if forms[name] in text]
    delivered = {event_key(item) for item in receiver.items}
    figures(
        load=f"backfill of {len(truth):,} records to an HTTP receiver",
        faults=f"the receiver quotes Authorization in 5 answers of 503 and in 400s for {len(wrong)} "
        f"events: {len(leaks)} of {len(forms)} credential forms leaked into stdout, stderr or dead letters",
        records=len(truth),
        lost=len(truth - wrong - delivered),
        duplicates=0,
    )
    assert proc.returncode == 0, outputs["stderr"][-3000:]
    assert leaks == []
    assert "[redacted]" in outputs["stderr"] and "[redacted]" in letters, "the echoes were there, scrubbed"
    assert delivered | set(dead_letters(tmp_path, "basic")) >= truth
