"""The s3 sink against moto server (a real S3 protocol endpoint, its own process), read back
with boto3; faults AWS has and moto lacks (throttling, refusals, lost answers) come from the
proxy in front of it (tests/peers/aws_proxy.py)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from auditstream.sinks.base import Envelope, SinkFatalError, SinkState
from auditstream.sinks.registry import SinkSettings, create_sink
from auditstream.sinks.s3 import S3Sink, S3SinkSettings
from tests.helpers import async_wait_until
from tests.peers.aws_proxy import AwsProxy
from tests.peers.moto import MotoServer, aws_env_fixture, aws_environment, moto_fixture  # noqa: F401
from tests.sinks.conftest import AWKWARD, FAST_RETRY, envelopes

pytestmark = pytest.mark.usefixtures("aws_env")

HOUR_NS = 3600 * 1_000_000_000
BASE_NS = 1_714_564_800_123_456_789  # 2024-05-01T12:00:00.123456789Z
KEY = re.compile(
    r"^(?:(?P<prefix>.+)/)?(?P<stream>[a-z_]+)/year=(?P<y>\d{4})/month=(?P<m>\d\d)/day=(?P<d>\d\d)/hour=(?P<h>\d\d)/"
    r"(?P<first>\d{8}T\d{6}Z)-(?P<id>[0-9a-f]{20})\.(?P<ext>jsonl\.gz|jsonl|cef\.gz|cef)$"
)


def s3_settings(endpoint_url: str, bucket: str, **overrides: Any) -> S3SinkSettings:
    config: dict[str, Any] = {
        "type": "s3",
        "name": "lake",
        "bucket": bucket,
        "prefix": "strongdm/audit/",
        "region": "us-east-1",
        "endpoint_url": endpoint_url,
        "force_path_style": True,
        "retry": FAST_RETRY,
    }
    config.update(overrides)
    return S3SinkSettings.model_validate(config)


async def started(settings: S3SinkSettings, state_dir: Path) -> S3Sink:
    sink = S3Sink(settings, state_dir=state_dir)
    await sink.start()
    return sink


def spread(stream: str, count: int, step_ns: int, start: int = 0) -> list[Envelope]:
    """``count`` records of ``stream`` ``step_ns`` apart from 2024-05-01T12:00Z."""
    return [
        Envelope(
            stream,
            f"{stream}-{i}",
            BASE_NS + i * step_ns,
            {"id": f"{stream}-{i}", "stream": stream, "seq": i, "message": AWKWARD},
        )
        for i in range(start, start + count)
    ]


def lines_by_key(moto: MotoServer, bucket: str) -> dict[str, list[dict[str, Any]]]:
    return {
        key: [json.loads(line) for line in body.splitlines()]
        for key, body in moto.objects(bucket, "strongdm/").items()
    }


def md5_header(body: bytes) -> str:
    return base64.b64encode(hashlib.md5(body).digest()).decode()


async def test_every_record_of_every_stream_lands_once_in_its_stream_and_hour(moto, state_dir):
    bucket = moto.new_bucket()
    async with AwsProxy(moto.endpoint_url) as proxy:
        sink = await started(s3_settings(proxy.endpoint_url, bucket), state_dir)
        # activities span 3 hours (one record every 36 s), the others a few seconds.
        sent = {
            s: spread(s, n, step)
            for s, n, step in [
                ("activities", 300, 36 * 10**9),
                ("queries", 120, 10**9),
                ("roles_history", 7, 10**6),
            ]
        }

        async def one_stream(records: list[Envelope]) -> None:
            for start in range(0, len(records), 70):  # pages, as the engine hands them over
                await sink.send(records[start : start + 70])  # 70 activities: 42 min, across hours

        await asyncio.gather(*(one_stream(r) for r in sent.values()))
        await sink.close()
    objects = lines_by_key(moto, bucket)
    seen: Counter[str] = Counter()
    for key, lines in objects.items():
        match = KEY.match(key)
        assert match, f"unexpected key {key}"
        assert match["prefix"] == "strongdm/audit" and match["ext"] == "jsonl.gz"
        assert {line["stream"] for line in lines} == {match["stream"]}
        times = [sent[match["stream"]][line["seq"]].time_ns for line in lines]
        hours = {dt.datetime.fromtimestamp(t // 10**9, dt.UTC).strftime("%Y%m%d%H") for t in times}
        assert hours == {match["y"] + match["m"] + match["d"] + match["h"]}, "one object, one hour partition"
        first = dt.datetime.fromtimestamp(min(times) // 10**9, dt.UTC)
        assert match["first"] == first.strftime("%Y%m%dT%H%M%SZ")
        seqs = [line["seq"] for line in lines]
        assert seqs == sorted(seqs), "a stream's order is kept within an object"
        assert lines[0]["message"] == AWKWARD
        seen.update(line["id"] for line in lines)
    expected = {e.key for records in sent.values() for e in records}
    assert set(seen) == expected and set(seen.values()) == {1}, "every record exactly once"
    assert len({KEY.match(k)["h"] for k in objects if "/activities/" in k}) == 3  # type: ignore[index]
    puts = proxy.of("PutObject")
    assert puts and all(call.headers["Content-MD5"] == md5_header(call.body) for call in puts)
    assert {call.headers["Content-Type"] for call in puts} == {"application/gzip"}


async def test_cef_uncompressed_with_kms_encryption_and_storage_class(moto, state_dir):
    bucket = moto.new_bucket()
    settings = s3_settings(
        moto.endpoint_url,
        bucket,
        format="cef",
        compression="none",
        server_side_encryption="aws:kms",
        kms_key_id="alias/audit",
        storage_class="STANDARD_IA",
    )
    sink = await started(settings, state_dir)
    await sink.send(envelopes("queries", 5))
    await sink.close()
    objects = moto.objects(bucket, "strongdm/")
    assert len(objects) == 1
    key, body = next(iter(objects.items()))
    assert key.endswith(".cef")
    lines = body.decode().splitlines()
    assert len(lines) == 5 and all(line.startswith("CEF:0|") for line in lines)
    head = moto.client("s3").head_object(Bucket=bucket, Key=key)
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"].endswith("alias/audit")
    assert head["StorageClass"] == "STANDARD_IA"


async def test_objects_above_8_mib_go_up_in_parts_each_with_its_md5(moto, state_dir):
    bucket = moto.new_bucket()
    async with AwsProxy(moto.endpoint_url) as proxy:
        sink = await started(s3_settings(proxy.endpoint_url, bucket, compression="none"), state_dir)
        records = envelopes("activities", 9000, padding="p" * 1000)  # about 9.7 MiB of NDJSON
        await sink.send(records)
        await sink.close()
    assert [c.operation for c in proxy.calls] == [
        "CreateMultipartUpload",
        "UploadPart",
        "UploadPart",
        "CompleteMultipartUpload",
    ]
    parts = proxy.of("UploadPart")
    assert len(parts[0].body) == 8 * 1024 * 1024
    assert all(call.headers["Content-MD5"] == md5_header(call.body) for call in parts)
    objects = lines_by_key(moto, bucket)
    assert len(objects) == 1
    assert next(iter(objects.values())) == [e.event for e in records]


async def test_an_s3_outage_loses_nothing(state_dir):
    with MotoServer() as server:
        bucket = server.new_bucket()
        async with AwsProxy(server.endpoint_url) as proxy:
            sink = await started(s3_settings(proxy.endpoint_url, bucket), state_dir)
            server.stop()
            during = envelopes("activities", 40)
            sending = asyncio.create_task(sink.send(during))
            await async_wait_until(lambda: sink.health().state is SinkState.RETRYING, what="retrying")
            assert not sending.done()
            # moto forgets everything on restart: hold the sink off until the bucket is back.
            proxy.down = True
            server.start()
            server.client("s3").create_bucket(Bucket=bucket)
            proxy.down = False
            await sending
            after = envelopes("activities", 40, start=40)
            await sink.send(after)
            await sink.close()
            objects = lines_by_key(server, bucket)
    ids = Counter(line["id"] for lines in objects.values() for line in lines)
    assert set(ids) == {e.key for e in during + after} and set(ids.values()) == {1}
    assert sink.health().state is SinkState.OK


async def test_a_retried_upload_overwrites_instead_of_adding_an_object(moto, state_dir):
    bucket = moto.new_bucket()
    async with AwsProxy(moto.endpoint_url) as proxy:
        sink = await started(s3_settings(proxy.endpoint_url, bucket), state_dir)
        proxy.lose_answer["PutObject"] = 1  # S3 stores it, the answer never arrives
        batch = envelopes("activities", 25)
        await sink.send(batch)
        await sink.send(batch)  # the engine sending a batch again after a failure
        await sink.close()
    puts = proxy.of("PutObject")
    assert [call.status for call in puts] == [None, 200, 200]
    assert len({call.path for call in puts}) == 1, "every attempt writes the same key"
    objects = lines_by_key(moto, bucket)
    assert len(objects) == 1
    assert [line["id"] for line in next(iter(objects.values()))] == [e.key for e in batch]


async def test_throttling_and_5xx_are_retried(moto, state_dir):
    bucket = moto.new_bucket()
    async with AwsProxy(moto.endpoint_url) as proxy:
        sink = await started(s3_settings(proxy.endpoint_url, bucket), state_dir)
        proxy.refuse["PutObject"].extend(
            [
                (503, "SlowDown", "Please reduce your request rate."),
                (500, "InternalError", "We encountered an internal error."),
            ]
        )
        batch = envelopes("queries", 10)
        await sink.send(batch)
        await sink.close()
    assert [call.status for call in proxy.of("PutObject")] == [503, 500, 200]
    objects = lines_by_key(moto, bucket)
    assert [line["id"] for lines in objects.values() for line in lines] == [e.key for e in batch]


KMS_DENIED = (
    "User: arn:aws:iam::123456789012:user/auditstream is not authorized to perform: "
    "kms:GenerateDataKey on resource: arn:aws:kms:us-east-1:123456789012:key/1234"
)


async def test_check_names_the_missing_permission_or_bucket(moto, state_dir):
    bucket = moto.new_bucket()
    async with AwsProxy(moto.endpoint_url) as proxy:
        kms = s3_settings(
            proxy.endpoint_url, bucket, server_side_encryption="aws:kms", kms_key_id="alias/audit"
        )
        result = await S3Sink(kms, state_dir=state_dir).probe()
        assert result.ok, result.detail
        assert f"s3://{bucket}/strongdm/audit/.auditstream-check/lake" in result.detail
        assert proxy.of("PutObject")[-1].headers["x-amz-server-side-encryption"] == "aws:kms"

        proxy.refuse["PutObject"].append((403, "AccessDenied", KMS_DENIED))
        result = await S3Sink(kms, state_dir=state_dir).probe()
        assert not result.ok and "missing permission kms:GenerateDataKey" in result.detail

        proxy.refuse["PutObject"].append((403, "AccessDenied", "Access Denied"))
        result = await S3Sink(kms, state_dir=state_dir).probe()
        assert not result.ok
        assert "missing permission s3:PutObject (and kms:GenerateDataKey on alias/audit" in result.detail

        proxy.refuse["HeadBucket"].append((403, "AccessDenied", ""))
        result = await S3Sink(kms, state_dir=state_dir).probe()
        assert not result.ok and "missing permission s3:ListBucket" in result.detail

        missing = s3_settings(proxy.endpoint_url, "no-such-bucket-here")
        result = await S3Sink(missing, state_dir=state_dir).probe()
        assert (
            not result.ok
            and "HTTP 404: Not Found; create the bucket, or fix the bucket setting" in result.detail
        )


async def test_a_denied_upload_stops_the_sink_with_the_data_kept(moto, state_dir):
    bucket = moto.new_bucket()
    async with AwsProxy(moto.endpoint_url) as proxy:
        sink = await started(s3_settings(proxy.endpoint_url, bucket), state_dir)
        proxy.refuse["PutObject"].append((403, "AccessDenied", "Access Denied"))
        batch = envelopes("activities", 5)
        with pytest.raises(SinkFatalError, match="missing permission s3:PutObject"):
            await sink.send(batch)
        assert sink.health().state is SinkState.FAILED
        assert moto.objects(bucket, "strongdm/") == {}
        await sink.send(batch)  # what the engine does after its pause, once fixed
        await sink.close()
    assert sink.health().state is SinkState.OK
    assert len(moto.objects(bucket, "strongdm/")) == 1
    assert not (state_dir / "dead-letter" / "lake.jsonl").exists()


async def test_without_credentials_the_sink_stops_and_names_the_chain(moto, state_dir, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    sink = await started(s3_settings(moto.endpoint_url, moto.new_bucket()), state_dir)
    with pytest.raises(SinkFatalError, match=r"Unable to locate credentials.*AWS_ACCESS_KEY_ID.*IRSA"):
        await sink.send(envelopes("activities", 1))
    await sink.close()


def test_object_names_come_from_the_content():
    from auditstream.sinks.delivery import Record
    from auditstream.sinks.s3 import object_key

    settings = S3SinkSettings.model_validate({"type": "s3", "name": "x", "bucket": "audit-lake"})
    batch = [Record(e, b"{}\n") for e in spread("activities", 3, 10**9)]
    key = object_key(settings, "activities", batch)
    assert key == object_key(settings, "activities", [Record(r.envelope, b"other\n") for r in batch])
    assert key != object_key(settings, "activities", batch[:2])
    assert key.startswith("activities/year=2024/month=05/day=01/hour=12/20240501T120000Z-")
    assert key.endswith(".jsonl.gz")


def test_settings_are_checked():
    adapter: TypeAdapter[Any] = TypeAdapter(SinkSettings)
    sink = create_sink(adapter.validate_python({"type": "s3", "name": "x", "bucket": "audit-lake"}))
    assert isinstance(sink, S3Sink)
    assert sink.settings.batch.max_bytes == 64 * 1024 * 1024  # sized for objects
    bad = [
        ({"kms_key_id": "alias/k"}, "kms_key_id needs server_side_encryption"),
        ({"bucket": "s3://audit-lake/x"}, "not a bucket name"),
        ({"storage_class": "COLD"}, "storage_class"),
        ({"access_key": "AKIA"}, "Extra inputs"),
        ({"tls": {"cert_file": "/c", "key_file": "/k"}}, "tls.verify and tls.ca_file only"),
        ({"endpoint_url": "https://key:secret@minio.example"}, "not in the URL"),
        ({"endpoint_url": "minio.example:9000"}, "is not an http:// or https:// URL"),
    ]
    for extra, message in bad:
        with pytest.raises(ValueError, match=message):
            S3SinkSettings.model_validate({"type": "s3", "name": "x", "bucket": "audit-lake", **extra})


BLOCK_AWS = (
    "import sys; sys.modules['aiobotocore'] = None; from auditstream.cli import main; sys.exit(main())"
)


@pytest.mark.parametrize(
    "sink",
    [
        {"type": "s3", "name": "lake", "bucket": "audit-lake"},
        {"type": "cloudwatch_logs", "name": "cw", "log_group": "/strongdm/audit"},
    ],
)
def test_without_the_aws_extra_the_config_error_says_how_to_install_it(tmp_path, sink):
    from tests.e2e.support import daemon_config_document, write_toml

    doc = daemon_config_document("127.0.0.1:1", "auth-x", "AAAA", tmp_path)
    doc["sinks"] = [sink]
    config = write_toml(tmp_path / "config.toml", doc)
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_AWS, "run", "--config", str(config)],
        capture_output=True,
        timeout=60,
        env=aws_environment(),
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1
    assert f"the {sink['type']} sink needs the AWS extra: pip install 'auditstream[aws]'" in lines[0]


def test_auditstream_imports_no_aws_library_unless_an_aws_sink_is_configured():
    code = (
        "import sys, auditstream.cli, auditstream.sinks.registry; "
        "print(sorted(m for m in sys.modules if 'boto' in m))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60, check=True)
    assert proc.stdout.decode().strip() == "[]"
