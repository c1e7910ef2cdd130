"""``auditstream backfill`` into Amazon Security Lake custom sources, against moto server (S3 and
STS: the provider role is assumed with its external ID), read back with pyarrow and DuckDB:
every object sits under the source of its one OCSF class and the partition of its day, and
every record of activities, queries and two history streams is there once, compared with the
emulator's ground truth; ``auditstream check`` writes its empty check object to every source.

Then a crash: the backfill is SIGKILLed while it delivers and run again. Nothing is missing.
A record is in the lake twice only when the kill fell between its object's upload and the
checkpoint that records it: the resumed run reads it again and, batched with other records
this time, writes it into an object of another name. The test holds that to the letter:
every second copy has its first in an object that was there (or on its way) at the kill.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import io
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from auditstream.emulator import EmulatorOptions, running_emulator
from auditstream.sinks.security_lake import CLASS_UIDS
from tests.e2e.support import write_daemon_config
from tests.helpers import async_wait_until
from tests.peers.aws_proxy import AwsProxy
from tests.peers.moto import MotoServer, aws_environment

pq = pytest.importorskip("pyarrow.parquet")
duckdb = pytest.importorskip("duckdb")

STREAMS = ["activities", "queries", "roles_history", "accounts_history"]
BUCKET = "aws-security-data-lake-us-east-1-0123456789abcdef"
ACCOUNT = "111122223333"
ROLE = "arn:aws:iam::111122223333:role/AmazonSecurityLake-Provider-sdm_all-us-east-1"
EXTERNAL_ID = "lake-external-id-SECRET-7f3a"
SOURCES = {
    "account_change": "sdm_account_change",
    "authentication": "sdm_authentication",
    "entity_management": "sdm_entity_mgmt",
    "user_access": "sdm_user_access",
    "group_management": "sdm_group_mgmt",
    "http_activity": "sdm_http",
    "rdp_activity": "sdm_rdp",
    "ssh_activity": "sdm_ssh",
    "api_activity": "sdm_api",
    "datastore_activity": "sdm_datastore",
}
SOURCE_OF_CLASS = {CLASS_UIDS[key]: name for key, name in SOURCES.items()}
Counts = collections.Counter[tuple[str, str]]


def lake_sink(endpoint_url: str, tmp_path: Path) -> dict[str, Any]:
    """Every key the sink has; flush_interval stays the default (5 minutes)."""
    return {
        "type": "security_lake",
        "name": "security-lake",
        "format": "ocsf",
        "region": "us-east-1",
        "account_id": ACCOUNT,
        "bucket": BUCKET,
        "role_arn": ROLE,
        "external_id": EXTERNAL_ID,
        "endpoint_url": endpoint_url,
        "sts_endpoint_url": endpoint_url,
        "force_path_style": True,
        "streams": STREAMS,
        "batch": {"max_events": 500_000, "max_bytes": 67_108_864},
        "retry": {"initial": "0.1s", "maximum": "2s", "max_elapsed": "0s", "unhealthy_after": "60s"},
        "dead_letter_path": str(tmp_path / "dead-letter" / "security-lake.jsonl"),
        "sources": {
            key: (name if n % 2 else {"location": f"s3://{BUCKET}/ext/{name}/"})
            for n, (key, name) in enumerate(SOURCES.items())
        },
    }


def period() -> tuple[dt.datetime, dt.datetime]:
    """Eight days up to an hour ago: every record is behind, as in any backfill of the past,
    so none waits for flush_interval (a backfill ending now would hold its last, recent records
    up to that long before it can finish)."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return now - dt.timedelta(days=8), now - dt.timedelta(hours=1)


def truth(emu: Any, until: dt.datetime) -> set[tuple[str, str]]:
    cut = int(until.timestamp()) * 1_000_000_000
    return {(s, key) for s in STREAMS for key, at in emu.filter_truth(s) if at < cut}


async def backfill(
    config: Path, since: dt.datetime, until: dt.datetime, log: Path
) -> asyncio.subprocess.Process:
    with log.open("ab") as err:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "auditstream.cli",
            "backfill",
            "--config",
            str(config),
            "--from",
            since.isoformat(),
            "--to",
            until.isoformat(),
            "--streams",
            ",".join(STREAMS),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=err,
            env=aws_environment(),
        )


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


def lake_objects(moto: MotoServer) -> dict[str, bytes]:
    s3 = moto.client("s3")
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="ext/"):
        for item in page.get("Contents", []):
            out[item["Key"]] = s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
    return out


def records_by_object(objects: dict[str, bytes]) -> dict[str, list[tuple[str, str]]]:
    """(stream, key) of every row of every object, after checking the object's place: one
    class per object, under that class's source, in the partition of its rows' day."""
    out = {}
    for key, body in objects.items():
        if "/auditstream-check-" in key:
            continue
        parts = key.split("/")
        assert parts[0] == "ext" and parts[2:5] == ["region=us-east-1", f"accountId={ACCOUNT}", parts[4]], key
        table = pq.read_table(io.BytesIO(body))
        (uid,) = set(table.column("class_uid").to_pylist())
        assert SOURCE_OF_CLASS[uid] == parts[1], f"{key}: class {uid} under another class's source"
        times = table.column("time").to_pylist()
        assert times == sorted(times), f"{key}: rows not in time order"
        days = {dt.datetime.fromtimestamp(t / 1000, dt.UTC).strftime("%Y%m%d") for t in times}
        assert {f"eventDay={day}" for day in days} == {parts[4]}, key
        metadata = table.column("metadata").combine_chunks()
        out[key] = list(
            zip(
                metadata.field("log_name").to_pylist(),
                metadata.field("original_event_uid").to_pylist(),
                strict=True,
            )
        )
    return out


def counted(rows: dict[str, list[tuple[str, str]]]) -> Counts:
    return collections.Counter(record for records in rows.values() for record in records)


async def test_backfill_lands_every_record_once_under_its_class_source(tmp_path):
    since, until = period()
    log = tmp_path / "backfill.log"
    with running_emulator(EmulatorOptions(seed=23, records=3000)) as emu, MotoServer() as moto:
        moto.client("s3").create_bucket(Bucket=BUCKET)  # Security Lake's bucket, there already
        config = write_daemon_config(emu, tmp_path, sinks=[lake_sink(moto.endpoint_url, tmp_path)])
        proc = await backfill(config, since, until, log)
        code = await asyncio.wait_for(proc.wait(), timeout=600)
        assert code == 0, tail(log)
        expected = truth(emu, until)
        stored = lake_objects(moto)
        check = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "auditstream.cli",
            "check",
            "--config",
            str(config),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=aws_environment(),
        )
        out, err = await asyncio.wait_for(check.communicate(), timeout=120)
        checked = {key for key in lake_objects(moto) if "/auditstream-check-security-lake.parquet" in key}

    rows = records_by_object(stored)
    delivered = counted(rows)
    assert len(expected) > 5000, "activities, queries and two history streams"
    assert not expected - set(delivered), f"{len(expected - set(delivered))} missing"
    assert not {k: n for k, n in delivered.items() if n > 1}, "a record twice"
    assert not set(delivered) - expected, "records the emulator never served (or after --to)"
    assert {key.split("/")[1] for key in rows} == set(SOURCES.values()), "every class has records"
    assert not (tmp_path / "dead-letter").exists() or not list((tmp_path / "dead-letter").iterdir())
    assert f"backfill complete: {len(expected):,} records" in tail(log)
    assert EXTERNAL_ID not in log.read_text()

    local = tmp_path / "lake"
    for key, body in stored.items():
        (local / key).parent.mkdir(parents=True, exist_ok=True)
        (local / key).write_bytes(body)
    with duckdb.connect() as db:
        (total,) = db.execute(
            "SELECT sum(n) FROM ("
            + " UNION ALL ".join(
                f"SELECT count(*) AS n FROM read_parquet('{local}/ext/{name}/**/*.parquet')"
                for name in SOURCES.values()
            )
            + ")"
        ).fetchall()[0]
        logins = db.execute(
            "SELECT count(*) FROM read_parquet("
            f"'{local}/ext/sdm_authentication/**/*.parquet', hive_partitioning = true) "
            "WHERE activity_id = 1 AND actor.user.uid IS NOT NULL AND accountId = '111122223333'"
        ).fetchall()[0][0]
    assert total == len(expected) and logins > 0

    lines = out.decode().splitlines()
    assert check.returncode == 0, (lines, err.decode()[-2000:])
    assert any(line.startswith("ok") and "sink security-lake" in line for line in lines), lines
    assert len(checked) == len(SOURCES), "an empty check object under each source"
    assert EXTERNAL_ID not in out.decode() + err.decode()


class SlowUploads(AwsProxy):
    """moto behind a link that takes a while per object, so a kill lands mid-backfill.

    ``open_requests``: requests received and not yet answered. An upload whose body had
    arrived when its client was killed still reaches moto, as it would reach S3."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.open_requests = 0

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.open_requests += 1
        try:
            if request.method == "PUT":
                await asyncio.sleep(0.05)  # the fault simulated (a slow network), not synchronisation
            return await super()._handle(request)
        finally:
            self.open_requests -= 1


async def test_a_backfill_killed_while_delivering_resumes_with_nothing_missing(tmp_path):
    since, until = period()
    log = tmp_path / "backfill.log"
    with running_emulator(EmulatorOptions(seed=29, records=3000)) as emu, MotoServer() as moto:
        moto.client("s3").create_bucket(Bucket=BUCKET)
        async with SlowUploads(moto.endpoint_url) as proxy:
            config = write_daemon_config(emu, tmp_path, sinks=[lake_sink(proxy.endpoint_url, tmp_path)])
            proc = await backfill(config, since, until, log)
            await async_wait_until(
                lambda: len(proxy.of("PutObject")) >= 20 or proc.returncode is not None, 300, "uploads"
            )
            assert proc.returncode is None, f"the backfill ended before the kill:\n{tail(log)}"
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            await async_wait_until(lambda: proxy.open_requests == 0, 30, "the uploads on their way")
            at_kill = records_by_object(lake_objects(moto))
            proc = await backfill(config, since, until, log)
            code = await asyncio.wait_for(proc.wait(), timeout=600)
            assert code == 0, tail(log)
            expected = truth(emu, until)
            after = records_by_object(lake_objects(moto))

    before_kill = counted(at_kill)
    delivered = counted(after)
    assert 0 < len(before_kill) < len(expected), "the kill landed mid-backfill"
    assert set(at_kill) <= set(after), "objects are overwritten or kept, never removed"
    assert not expected - set(delivered), f"{len(expected - set(delivered))} missing after the resume"
    assert not set(delivered) - expected
    twice = {record for record, n in delivered.items() if n > 1}
    assert all(delivered[record] == 2 for record in twice)
    assert twice <= set(before_kill), "a second copy only of what was uploaded (or on its way) at the kill"
    print(f"\nkilled after {len(before_kill):,} of {len(expected):,} records; {len(twice):,} written twice")
