"""``auditstream backfill`` into both AWS sinks at once, against moto server: every record of
activities, queries and two history streams lands in S3 and in CloudWatch Logs, read back
with boto3 and compared with the emulator's ground truth: 0 missing, 0 duplicated."""

from __future__ import annotations

import collections
import datetime as dt
import json
import subprocess
import sys

from auditstream.emulator import EmulatorOptions, running_emulator
from tests.e2e.support import truth_keys, write_daemon_config
from tests.peers.moto import MotoServer, aws_environment

STREAMS = ["activities", "queries", "roles_history", "accounts_history"]


def test_backfill_delivers_every_record_once_to_s3_and_cloudwatch_logs(tmp_path):
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=8)
    with running_emulator(EmulatorOptions(seed=16, records=3000)) as emu, MotoServer() as moto:
        moto.client("s3").create_bucket(Bucket="strongdm-audit")  # created beforehand, as in production
        retry = {"initial": "0.1s", "maximum": "2s", "max_elapsed": "0s", "unhealthy_after": "60s"}
        sinks = [
            {
                "type": "s3",
                "name": "lake",
                "bucket": "strongdm-audit",
                "prefix": "auditstream/",
                "region": "us-east-1",
                "endpoint_url": moto.endpoint_url,
                "force_path_style": True,
                "format": "json",
                "compression": "gzip",
                "server_side_encryption": "aws:kms",
                "kms_key_id": "alias/auditstream",
                "storage_class": "STANDARD_IA",
                "streams": STREAMS,
                "batch": {"max_events": 100_000, "max_bytes": 67_108_864, "max_age": "0s"},
                "retry": retry,
                "dead_letter_path": str(tmp_path / "dead-letter" / "lake.jsonl"),
            },
            {
                "type": "cloudwatch_logs",
                "name": "cloudwatch",
                "log_group": "/strongdm/audit",
                "log_stream": "auditstream/{stream}",
                "region": "us-east-1",
                "endpoint_url": moto.endpoint_url,
                "create": True,
                "retention_days": 30,
                "format": "json",
                "streams": STREAMS,
                "batch": {"max_events": 10_000, "max_bytes": 1_048_576, "max_age": "0s"},
                "retry": retry,
                "dead_letter_path": str(tmp_path / "dead-letter" / "cloudwatch.jsonl"),
            },
        ]
        config = write_daemon_config(emu, tmp_path, sinks=sinks)
        command = [sys.executable, "-m", "auditstream.cli", "backfill", "--config", str(config)]
        command += ["--from", since.strftime("%Y-%m-%d"), "--streams", ",".join(STREAMS)]
        proc = subprocess.run(command, capture_output=True, timeout=600, env=aws_environment())
        assert proc.returncode == 0, proc.stderr.decode()[-3000:]

        truth = truth_keys(emu, STREAMS)
        in_s3: collections.Counter[tuple[str, str]] = collections.Counter()
        for key, body in moto.objects("strongdm-audit", "auditstream/").items():
            for line in body.splitlines():
                event = json.loads(line)
                assert key.startswith(f"auditstream/{event['logType']}/year="), key
                in_s3[(event["logType"], event["id"])] += 1
        in_cloudwatch: collections.Counter[tuple[str, str]] = collections.Counter()
        for log_stream, events in moto.log_events("/strongdm/audit").items():
            for stored in events:
                event = json.loads(stored["message"])
                assert log_stream == f"auditstream/{event['logType']}"
                in_cloudwatch[(event["logType"], event["id"])] += 1
        head = moto.client("s3").head_object(
            Bucket="strongdm-audit", Key=next(iter(moto.objects("strongdm-audit")))
        )

    assert len(truth) == 2 * 3000 + 2 * 300, "activities, queries and two history streams"
    for name, delivered in (("s3", in_s3), ("cloudwatch_logs", in_cloudwatch)):
        missing = truth - set(delivered)
        duplicated = {k: n for k, n in delivered.items() if n > 1}
        unexpected = set(delivered) - truth
        assert not missing, f"{name}: {len(missing)} missing, e.g. {sorted(missing)[:3]}"
        assert not duplicated, f"{name}: {len(duplicated)} duplicated, e.g. {sorted(duplicated)[:3]}"
        assert not unexpected, f"{name}: {len(unexpected)} records the emulator never served"
    assert head["ServerSideEncryption"] == "aws:kms" and head["StorageClass"] == "STANDARD_IA"
    assert not list((tmp_path / "dead-letter").glob("*.jsonl")), "nothing was rejected"
    assert f"backfill complete: {len(truth):,} records" in proc.stderr.decode()
