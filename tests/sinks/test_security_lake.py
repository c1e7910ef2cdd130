"""The security_lake sink: its Parquet schema against the OCSF releases and every event the
encoder makes, its settings, and delivery to moto server (S3 and STS, a real AWS protocol
endpoint in its own process) read back with pyarrow and DuckDB; faults moto lacks (refusals,
lost answers) come from the proxy in front of it (tests/peers/aws_proxy.py)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import functools
import io
import random
import re
import time
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import TypeAdapter, ValidationError

from auditstream.formats.ocsf import OCSF_VERSIONS, OcsfEncoder, OcsfSettings
from auditstream.sdm.registry import STREAMS
from auditstream.sinks import security_lake as lake
from auditstream.sinks.base import Envelope, SinkFatalError, SinkState
from auditstream.sinks.delivery import Record
from auditstream.sinks.registry import SinkSettings, create_sink
from auditstream.sinks.security_lake import (
    CLASS_KEYS,
    COLUMNS,
    JSON,
    MAP,
    SecurityLakeSink,
    SecurityLakeSinkSettings,
    Shape,
)
from tests.formats import schema_corpus
from tests.helpers import async_wait_until
from tests.peers.aws_proxy import AwsProxy, Call
from tests.peers.moto import MotoServer, aws_env_fixture, moto_fixture  # noqa: F401
from tests.sinks.conftest import FAST_RETRY

pq = pytest.importorskip("pyarrow.parquet")
duckdb = pytest.importorskip("duckdb")

pytestmark = pytest.mark.usefixtures("aws_env")

ACCOUNT = "123456789012"
REGION = "us-east-1"
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
NAME_OF_CLASS = {lake.CLASS_UIDS[key]: name for key, name in SOURCES.items()}
ROLE = "arn:aws:iam::123456789012:role/AmazonSecurityLake-Provider-sdm_all-us-east-1"
EXTERNAL_ID = "sdm-external-id-SECRET-4242"
KEY = re.compile(
    r"^ext/(?P<source>[\w.:-]+)/region=(?P<region>[a-z0-9-]+)/accountId=(?P<account>\d{12})/"
    r"eventDay=(?P<day>\d{8})/(?P<first>\d{8}T\d{6}Z)-(?P<id>[0-9a-f]{24})\.parquet$"
)


def lake_config(endpoint_url: str, bucket: str, **overrides: Any) -> dict[str, Any]:
    """Half the sources by name (under ``bucket``), half by the provider location."""
    sources: dict[str, Any] = {}
    for n, (key, name) in enumerate(SOURCES.items()):
        sources[key] = name if n % 2 else f"s3://{bucket}/ext/{name}/"
    config: dict[str, Any] = {
        "type": "security_lake",
        "name": "lake",
        "bucket": bucket,
        "region": REGION,
        "account_id": ACCOUNT,
        "endpoint_url": endpoint_url,
        "sts_endpoint_url": endpoint_url,
        "force_path_style": True,
        "sources": sources,
        "retry": FAST_RETRY,
    }
    config.update(overrides)
    return config


def lake_settings(endpoint_url: str, bucket: str, **overrides: Any) -> SecurityLakeSinkSettings:
    return SecurityLakeSinkSettings.model_validate(lake_config(endpoint_url, bucket, **overrides))


async def started(settings: SecurityLakeSinkSettings, state_dir: Path) -> SecurityLakeSink:
    sink = SecurityLakeSink(settings, state_dir=state_dir)
    await sink.start()
    return sink


@functools.cache
def corpus() -> list[tuple[str, dict[str, Any]]]:
    """(stream, event) of every event of the OCSF corpus (every stream, SDK verb and query
    category), each with an id of its own."""
    out = []
    for n, (_, event) in enumerate(sorted(schema_corpus.corpus().items())):
        stream = event["logType"] if event.get("logType") in STREAMS else "activities"
        out.append((stream, {**event, "id": f"{stream}-{n:05d}"}))
    return out


def corpus_envelopes(time_ns: int) -> list[Envelope]:
    return [Envelope(stream, event["id"], time_ns + n, event) for n, (stream, event) in enumerate(corpus())]


def objects(moto: MotoServer, bucket: str, prefix: str = "ext/") -> dict[str, bytes]:
    s3 = moto.client("s3")
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            out[item["Key"]] = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    return out


def read(body: bytes) -> Any:
    return pq.read_table(io.BytesIO(body))


def restored(value: Any, shape: Shape) -> Any:
    """A value read back from Parquet in the form the encoder made it: no null attributes,
    maps as dicts, JSON text parsed."""
    if value is None:
        return None
    if shape == MAP:
        return dict(value)
    if shape == JSON:
        return orjson.loads(value)
    if isinstance(shape, dict):
        return {k: restored(v, shape[k]) for k, v in value.items() if v is not None}
    if isinstance(shape, list):
        return [restored(v, shape[0]) for v in value]
    return value


def as_stored(document: dict[str, Any]) -> dict[str, Any]:
    """The encoder's event with ``unmapped`` as the map keeps it (non-string values as JSON)."""
    out = orjson.loads(orjson.dumps(document))
    if "unmapped" in out:
        out["unmapped"] = {
            k: v if isinstance(v, str) or v is None else orjson.dumps(v).decode()
            for k, v in out["unmapped"].items()
        }
    return out


# -- the schema ------------------------------------------------------------------------------

OCSF_BASE_TYPES = {
    "string_t": lake.STRING,
    "integer_t": lake.INT,
    "long_t": lake.LONG,
    "boolean_t": lake.BOOL,
    "json_t": lake.JSON,
}


@functools.cache
def ocsf_export(version: str) -> dict[str, Any]:
    ocsf_json_schema = pytest.importorskip("ocsf_json_schema")
    return ocsf_json_schema.get_ocsf_schema(version)  # type: ignore[no-any-return]


def schema_problems(
    raw: dict[str, Any], attributes: dict[str, Any], shape: dict[str, Shape], path: str
) -> list[str]:
    """Where our columns disagree with the release: an attribute it does not have, a type
    that is not the attribute's (``port_t`` -> ``integer_t`` -> int32 ...), a list that is not
    an array or the other way round."""
    # The two export formats: 1.8.0's under dictionary.types.attributes, 1.7.0's under types.
    types = raw["dictionary"]["types"]["attributes"] if "dictionary" in raw else raw["types"]
    found = []
    for name, ours in shape.items():
        where = f"{path}.{name}" if path else name
        spec = attributes.get(name)
        if spec is None:
            found.append(f"{where}: no such attribute")
            continue
        if bool(spec.get("is_array")) != isinstance(ours, list):
            found.append(f"{where}: is_array is {spec.get('is_array')}")
            continue
        inner = ours[0] if isinstance(ours, list) else ours
        kind = spec["type"]
        if kind == "object_t":
            if spec["object_type"] == "object":  # unmapped: an open object
                if inner != MAP:
                    found.append(f"{where}: an open object, stored as a map")
                continue
            if not isinstance(inner, dict):
                found.append(f"{where}: an object ({spec['object_type']}), not {inner}")
                continue
            nested = raw["objects"][spec["object_type"]]["attributes"]
            found += schema_problems(raw, nested, inner, where)
            continue
        while kind not in OCSF_BASE_TYPES and kind in types:
            kind = types[kind]["type"]
        if OCSF_BASE_TYPES.get(kind) != inner:
            found.append(f"{where}: {spec['type']} is {OCSF_BASE_TYPES.get(kind)}, not {inner}")
    return found


@pytest.mark.parametrize("version", OCSF_VERSIONS)
def test_every_column_is_the_releases_attribute_with_its_type(version):
    raw = ocsf_export(version)
    by_uid = {spec["uid"]: name for name, spec in raw["classes"].items()}
    problems = {}
    for uid, columns in COLUMNS.items():
        assert by_uid[uid] == CLASS_KEYS[uid], "the config key of a class is its OCSF name"
        found = schema_problems(raw, raw["classes"][by_uid[uid]]["attributes"], columns, "")
        if found:
            problems[uid] = found
    assert not problems


def test_the_arrow_types_follow_the_declared_columns():
    schema = lake.arrow_schema(6005)
    assert str(schema.field("time").type) == "int64" and str(schema.field("severity_id").type) == "int32"
    assert str(schema.field("unmapped").type) == "map<string, string>"
    assert str(schema.field("metadata").type.field("profiles").type) == "list<item: string>"
    assert str(schema.field("dst_endpoint").type.field("port").type) == "int32"
    assert str(lake.arrow_schema(3004).field("entity").type.field("data").type) == "string"


@pytest.mark.parametrize("version", OCSF_VERSIONS)
def test_every_event_the_encoder_makes_round_trips_through_its_class_schema(version):
    """Every stream, every SDK verb, every query category (the OCSF corpus): written and read
    back, each event is what the encoder made, attribute for attribute."""
    encoder = OcsfEncoder(OcsfSettings(version=version))
    by_class: dict[int, list[dict[str, Any]]] = {}
    for _, event in corpus():
        document = encoder.to_ocsf(event)
        by_class.setdefault(document["class_uid"], []).append(document)
    assert set(by_class) == set(COLUMNS) - {0}, "the corpus reaches every class but Base Event"
    for uid, documents in by_class.items():
        built = lake.build_object(uid, [lake.row_of(d) for d in documents])
        assert not built.rejected and built.written == list(range(len(documents)))
        table = read(built.body)
        assert table.schema == lake.arrow_schema(uid)
        back = [restored(row, COLUMNS[uid]) for row in table.to_pylist()]
        expected = sorted((as_stored(d) for d in documents), key=lambda d: d["time"])  # stable, as written
        assert back == expected


def test_rows_are_sorted_by_time_keeping_the_order_of_equal_times_in_zstd_pages_of_1_mib():
    encoder = OcsfEncoder()
    events = [event for stream, event in corpus() if stream == "activities"][:60]
    rows = []
    for n, event in enumerate(events):
        document = dict(encoder.to_ocsf(event))
        document["time"] = 1_714_564_800_000 + (7 - n % 7) * 1000  # 7 distinct times, shuffled
        rows.append(lake.row_of(document))
    by_class: dict[int, list[int]] = {}
    for n, row in enumerate(rows):
        by_class.setdefault(row.class_uid, []).append(n)
    for uid, indexes in by_class.items():
        built = lake.build_object(uid, [rows[i] for i in indexes])
        table = read(built.body)
        times = table.column("time").to_pylist()
        assert times == sorted(times) and built.first_ms == min(times)
        uids = table.column("metadata").combine_chunks().field("original_event_uid").to_pylist()
        order = [events[i]["id"] for i in sorted(indexes, key=lambda i: rows[i].time_ms)]  # stable
        assert uids == order
        meta = pq.ParquetFile(io.BytesIO(built.body)).metadata
        column = meta.row_group(0).column(0)
        assert column.compression == "ZSTD"
        assert meta.row_group(0).sorting_columns[0].column_index == table.schema.get_field_index("time")


def test_a_row_that_does_not_fit_is_refused_naming_the_attribute_and_the_others_are_written():
    encoder = OcsfEncoder()
    documents = [encoder.to_ocsf(event) for stream, event in corpus() if stream == "queries"][:3]
    uid = documents[0]["class_uid"]
    documents = [d for d in documents if d["class_uid"] == uid]
    odd = {**documents[0], "observables": [{"name": "x", "type_id": 0}]}
    wrong = {**documents[-1], "duration": "12 ms"}
    built = lake.build_object(
        uid, [lake.row_of(odd), *(lake.row_of(d) for d in documents), lake.row_of(wrong)]
    )
    assert built.written == list(range(1, len(documents) + 1))
    assert set(built.rejected) == {0, len(documents) + 1}
    assert "attributes with no column: observables" in built.rejected[0]
    assert f"OCSF class {uid}" in built.rejected[len(documents) + 1]
    assert read(built.body).num_rows == len(documents)


def test_object_names_come_from_the_records_whatever_their_order():
    settings = lake_settings("http://127.0.0.1:9", "aws-security-data-lake-us-east-1-abc")
    transport = lake.SecurityLakeTransport(settings)
    records = [Record(e, transport.encode(e)) for e in corpus_envelopes(1_714_564_800 * 10**9)[:20]]
    source = transport.sources[3004]
    key = transport.object_key(source, "20240501", records, 1_714_564_800_000)
    assert key == transport.object_key(source, "20240501", records[::-1], 1_714_564_800_000)
    assert key != transport.object_key(source, "20240501", records[1:], 1_714_564_800_000)
    assert KEY.match(key)["source"] == "sdm_entity_mgmt"  # type: ignore[index]


# -- settings -------------------------------------------------------------------------------


def test_a_source_is_a_name_under_bucket_or_the_provider_location():
    settings = lake_settings("http://127.0.0.1:9", "aws-security-data-lake-us-east-1-abc")
    sources = lake.resolve_sources(settings)
    assert sources[3001].location == "s3://aws-security-data-lake-us-east-1-abc/ext/sdm_account_change/"
    assert sources[3002].location == "s3://aws-security-data-lake-us-east-1-abc/ext/sdm_authentication/"
    versioned = lake_config("http://127.0.0.1:9", "b-unused")
    versioned["sources"]["ssh_activity"] = {
        "location": "s3://aws-security-data-lake-eu-west-1-xyz/ext/sdm_ssh/1.0/",
        "role_arn": "arn:aws:iam::123456789012:role/AmazonSecurityLake-Provider-sdm_ssh-eu-west-1",
        "external_id": "ssh-external-id",
    }
    ssh = lake.resolve_sources(SecurityLakeSinkSettings.model_validate(versioned))[4007]
    assert (ssh.bucket, ssh.prefix, ssh.name) == (
        "aws-security-data-lake-eu-west-1-xyz",
        "ext/sdm_ssh/1.0",
        "sdm_ssh",
    )
    assert ssh.role_keys.startswith("sources.ssh_activity.role_arn")


def invalid(config: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        TypeAdapter(SinkSettings).validate_python(config)
    return str(caught.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["sources"].update(authentication="sdm_authentication_events"), "1 to 20"),
        (lambda c: c["sources"].update(authentication="sdm auth"), "letters, digits"),
        (
            lambda c: c["sources"].update(authentication="s3://bucket/sdm_auth/"),
            "s3://<bucket>/ext/<source name>/",
        ),
        (
            lambda c: c["sources"].update(authentication={"name": "a", "location": "s3://b/ext/c/"}),
            "is not the source",
        ),
        (
            lambda c: c["sources"].pop("rdp_activity"),
            "sources.rdp_activity (OCSF class 4005, records of queries",
        ),
        (lambda c: c["sources"].update(audit_log="x"), "sources.audit_log"),
        (lambda c: c.pop("bucket"), "give its location"),
        (lambda c: c.update(batch={"max_age": "1m"}), "set that instead"),
        (lambda c: c.update(external_id="abcdef"), "external_id goes with role_arn"),
        (lambda c: c.update(role_arn="arn:aws:iam::1234:user/x"), "role_arn"),
        (lambda c: c.update(account_id="1234"), "account_id"),
        (lambda c: c.update(format="json"), "format"),
        (lambda c: c.pop("region"), "region"),
    ],
)
def test_configuration_errors_name_the_key_and_the_cause(change, message):
    config = lake_config("http://127.0.0.1:9", "aws-security-data-lake-us-east-1-abc")
    change(config)
    assert message in invalid(config)


def test_the_classes_a_stream_needs_sources_for_are_the_classes_its_records_get():
    """The configuration asks for a source per class of ``classes_of``: every class the
    encoder gives a record of the corpus is among those of its stream's kind."""
    encoder = OcsfEncoder()
    for stream, event in corpus():
        uid = encoder.to_ocsf(event)["class_uid"]
        assert uid in lake.classes_of(STREAMS[stream].kind), (stream, uid)
    assert lake.classes_of(STREAMS["activities"].kind) == {3001, 3002, 3004, 3005, 3006}
    assert lake.classes_of(STREAMS["queries"].kind) == {4002, 4005, 4007, 6003, 6005}


def test_the_source_keys_are_the_classes_ocsf_names():
    assert set(lake.LakeSources.model_fields) == set(CLASS_KEYS.values())


def test_fewer_sources_do_for_fewer_streams_and_flush_interval_is_the_batch_age():
    config = lake_config("http://127.0.0.1:9", "aws-security-data-lake-us-east-1-abc", streams=["*_history"])
    config["sources"] = {"entity_management": "sdm_entity_mgmt"}
    config["flush_interval"] = "10m"
    settings = TypeAdapter(SinkSettings).validate_python(config)
    assert isinstance(settings, SecurityLakeSinkSettings)
    assert settings.batch.max_age == 600.0 and settings.batch.max_events == 500_000
    assert isinstance(create_sink(settings), SecurityLakeSink)


def test_without_pyarrow_the_sink_is_refused_with_the_install_command(monkeypatch):
    monkeypatch.setattr(lake, "installed", lambda module: not module.startswith("pyarrow"))
    assert "pip install 'auditstream[lake]'" in invalid(
        lake_config("http://127.0.0.1:9", "aws-security-data-lake-us-east-1-abc")
    )


def test_the_example_configs_security_lake_sink_is_valid_once_uncommented(tmp_path):
    """config/auditstream.example.toml ships it commented out (it needs the [lake] extra)."""
    text = (Path(__file__).resolve().parents[2] / "config" / "auditstream.example.toml").read_text()
    block = text[text.index('# [[sinks]]\n# type = "security_lake"') :]
    document = "\n".join(
        line[2:] for line in block.splitlines() if line.startswith("# ") and line[2:3] != "#"
    )
    (tmp_path / "security-lake-external-id").write_text("example-external-id\n")
    (sink,) = tomllib.loads(document.replace("/run/secrets/auditstream/", f"{tmp_path}/"))["sinks"]
    settings = TypeAdapter(SinkSettings).validate_python(sink)
    assert isinstance(settings, SecurityLakeSinkSettings) and len(settings.sources.configured()) == 11
    sources = lake.resolve_sources(settings)
    assert sources[6005].role_arn != settings.role_arn and sources[6005].external_id == "example-external-id"
    assert settings.external_id is not None and settings.batch.max_age == 300.0


# -- delivery to moto -------------------------------------------------------------------------


def old_and_spread(count_per_day: int = 0) -> list[Envelope]:
    """The corpus, its records spread over three days of May 2024 (by their OCSF ``time``)."""
    out = []
    for n, envelope in enumerate(corpus_envelopes(1_714_564_800 * 10**9)):
        event = {**envelope.event, "timestamp": f"2024-05-0{1 + n % 3}T12:{n % 60:02d}:00.{n:06d}Z"}
        out.append(envelope._replace(event=event))
    return out


def read_back(moto: MotoServer, bucket: str) -> tuple[dict[str, Any], Counter[str]]:
    """Every object, checked against its place: one class per object, the class of its
    source, the day of its partition; and how often each record was seen."""
    tables = {}
    seen: Counter[str] = Counter()
    for key, body in objects(moto, bucket).items():
        match = KEY.match(key)
        assert match, f"unexpected key {key}"
        assert (match["region"], match["account"]) == (REGION, ACCOUNT)
        table = read(body)
        classes = set(table.column("class_uid").to_pylist())
        assert len(classes) == 1, f"{key}: one class per object"
        (uid,) = classes
        assert NAME_OF_CLASS[uid] == match["source"], f"{key}: class {uid} under another class's source"
        assert table.schema == lake.arrow_schema(uid)
        times = table.column("time").to_pylist()
        assert times == sorted(times)
        days = {dt.datetime.fromtimestamp(t / 1000, dt.UTC).strftime("%Y%m%d") for t in times}
        assert days == {match["day"]}
        assert match["first"] == dt.datetime.fromtimestamp(times[0] / 1000, dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        seen.update(table.column("metadata").combine_chunks().field("original_event_uid").to_pylist())
        tables[key] = table
    return tables, seen


async def test_every_record_lands_once_under_its_class_source_and_day_readable_by_duckdb(
    moto, state_dir, tmp_path
):
    bucket = moto.new_bucket("aws-security-data-lake-us-east-1")
    async with AwsProxy(moto.endpoint_url) as proxy:
        sink = await started(lake_settings(proxy.endpoint_url, bucket), state_dir)
        sent = old_and_spread()
        by_stream: dict[str, list[Envelope]] = {}
        for envelope in sent:
            by_stream.setdefault(envelope.stream, []).append(envelope)

        async def one_stream(records: list[Envelope]) -> None:
            for start in range(0, len(records), 50):  # pages, as the engine hands them over
                await sink.send(records[start : start + 50])

        # Records of 2024 are far behind: not held for the 5-minute flush_interval.
        await asyncio.wait_for(asyncio.gather(*(one_stream(r) for r in by_stream.values())), 60)
        await sink.close()
    tables, seen = read_back(moto, bucket)
    assert set(seen) == {e.key for e in sent} and set(seen.values()) == {1}, "every record exactly once"
    assert {KEY.match(k)["source"] for k in tables} == set(SOURCES.values())  # type: ignore[index]
    puts = proxy.of("PutObject")
    assert puts and {call.headers["Content-Type"] for call in puts} == {lake.PARQUET_CONTENT_TYPE}
    assert all("Content-MD5" in call.headers for call in puts)

    local = tmp_path / "lake"
    for key, body in objects(moto, bucket).items():
        (local / key).parent.mkdir(parents=True, exist_ok=True)
        (local / key).write_bytes(body)
    with duckdb.connect() as db:
        for name in SOURCES.values():
            files = f"{local}/ext/{name}/**/*.parquet"
            (rows,) = db.execute(
                f"SELECT count(*), count(DISTINCT metadata.original_event_uid), "
                f"count(*) FILTER (WHERE strftime(make_timestamp(time * 1000), '%Y%m%d') <> eventDay), "
                f"min(region), min(accountId) "
                f"FROM read_parquet('{files}', hive_partitioning = true, hive_types_autocast = false)"
            ).fetchall()
            assert rows[0] == rows[1] > 0 and rows[2] == 0, (name, rows)
            assert (rows[3], rows[4]) == (REGION, ACCOUNT)
        verbs = db.execute(
            "SELECT metadata.event_code, actor.user.uid "
            f"FROM read_parquet('{local}/ext/sdm_authentication/**/*.parquet')"
        ).fetchall()
        assert any(code == "user logged into the local client" for code, _ in verbs)
        states = db.execute(
            f"SELECT unmapped['queryState'] FROM read_parquet('{local}/ext/sdm_datastore/**/*.parquet')"
        ).fetchall()
        encoder = OcsfEncoder()
        expected = {e.event.get("queryState") for e in sent if encoder.to_ocsf(e.event)["class_uid"] == 6005}
        assert {state for (state,) in states} == expected and "completed" in expected


async def test_live_records_are_held_up_to_flush_interval_and_acknowledged_once_written(moto, state_dir):
    """Two streams at the live edge: neither send() returns before flush_interval has passed,
    both return once the one object holding their Entity Management records is written."""
    bucket = moto.new_bucket("aws-security-data-lake-us-east-1")
    settings = lake_settings(moto.endpoint_url, bucket, flush_interval="1s", streams=["*_history"])
    sink = await started(settings, state_dir)
    now = time.time_ns()
    stamp = dt.datetime.fromtimestamp(now / 1e9, dt.UTC).isoformat().replace("+00:00", "Z")
    history = [
        e._replace(event={**e.event, "timestamp": stamp})
        for e in corpus_envelopes(now)
        if e.stream.endswith("_history")
    ]
    roles = [e for e in history if e.stream == "roles_history"]
    accounts = [e for e in history if e.stream == "accounts_history"]
    assert roles and accounts
    started_at = time.monotonic()
    await asyncio.gather(sink.send(roles), sink.send(accounts))
    held = time.monotonic() - started_at
    stored = objects(moto, bucket)
    await sink.close()
    assert held >= 1.0, f"acknowledged after {held:.3f}s, before flush_interval"
    (body, *more) = stored.values()
    assert not more, "both streams' records in one object"
    ids = read(body).column("metadata").combine_chunks().field("original_event_uid").to_pylist()
    assert sorted(ids) == sorted(e.key for e in roles + accounts)


async def test_close_writes_what_is_held_and_then_acknowledges_it(moto, state_dir):
    bucket = moto.new_bucket("aws-security-data-lake-us-east-1")
    sink = await started(lake_settings(moto.endpoint_url, bucket, flush_interval="1h"), state_dir)
    live = corpus_envelopes(time.time_ns())[:30]
    sending = asyncio.create_task(sink.send(live))
    await async_wait_until(lambda: len(sink._pending) == len(live), what="the records buffered")
    assert not sending.done() and not objects(moto, bucket)
    await sink.close()
    await sending
    _, seen = read_back(moto, bucket)
    assert set(seen) == {e.key for e in live} and set(seen.values()) == {1}


async def test_a_retried_upload_overwrites_its_object_instead_of_adding_one(moto, state_dir):
    bucket = moto.new_bucket("aws-security-data-lake-us-east-1")
    async with AwsProxy(moto.endpoint_url) as proxy:
        proxy.lose_answer["PutObject"] = 1  # written, but the sink never hears so: it retries
        config = lake_config(proxy.endpoint_url, bucket, streams=["*_history"])
        config["sources"] = {"entity_management": config["sources"]["entity_management"]}
        settings = SecurityLakeSinkSettings.model_validate(config)
        sink = await started(settings, state_dir)
        records = [e for e in old_and_spread() if e.stream.endswith("_history")]
        await sink.send(records)
        await sink.close()
    puts = proxy.of("PutObject")
    assert len(puts) == len({call.path for call in puts}) + 1, "one upload was retried, to the same key"
    _, seen = read_back(moto, bucket)
    assert set(seen) == {e.key for e in records} and set(seen.values()) == {1}


async def test_objects_above_8_mib_go_up_in_parts(moto, state_dir):
    bucket = moto.new_bucket("aws-security-data-lake-us-east-1")
    async with AwsProxy(moto.endpoint_url) as proxy:
        settings = lake_settings(
            proxy.endpoint_url, bucket, streams=["*_history"], batch={"max_bytes": 1 << 30}
        )
        sink = await started(settings, state_dir)
        (template,) = [e for e in old_and_spread() if e.stream == "roles_history"][:1]
        # Random text hardly compresses: 13 MiB of base64 make a Parquet object over 8 MiB.
        noise = random.Random(7)
        records = [
            template._replace(
                key=f"big-{n}",
                event={
                    **template.event,
                    "id": f"big-{n}",
                    "padding": base64.b64encode(noise.randbytes(2000)).decode(),
                },
            )
            for n in range(5000)
        ]
        await sink.send(records)
        await sink.close()
    operations = [c.operation for c in proxy.calls]
    assert operations[0] == "CreateMultipartUpload" and operations[-1] == "CompleteMultipartUpload"
    assert operations.count("UploadPart") >= 2
    _, seen = read_back(moto, bucket)
    assert set(seen) == {e.key for e in records}


def assume_role_calls(proxy: AwsProxy) -> list[Call]:
    return [call for call in proxy.calls if b"Action=AssumeRole" in call.body]


async def test_the_provider_role_is_assumed_with_the_external_id_and_its_credentials_sign_the_uploads(
    moto, state_dir, caplog, capsys
):
    bucket = moto.new_bucket("aws-security-data-lake-us-east-1")
    async with AwsProxy(moto.endpoint_url) as proxy:
        settings = lake_settings(proxy.endpoint_url, bucket, role_arn=ROLE, external_id=EXTERNAL_ID)
        sink = await started(settings, state_dir)
        await sink.send(old_and_spread()[:40])
        await sink.close()
    (assume,) = assume_role_calls(proxy)  # one role for every source: assumed once
    body = assume.body.decode()
    assert "ExternalId=sdm-external-id-SECRET-4242" in body and "RoleSessionName=auditstream-lake" in body
    assert "AmazonSecurityLake-Provider-sdm_all-us-east-1" in body
    assert "Credential=testing/" in assume.headers["Authorization"], "STS is asked with the chain's keys"
    puts = proxy.of("PutObject")
    assert puts and all("Credential=testing/" not in call.headers["Authorization"] for call in puts)
    assert all("X-Amz-Security-Token" in call.headers for call in puts), "signed with the role's session"
    captured = capsys.readouterr()
    assert EXTERNAL_ID not in caplog.text + captured.out + captured.err


async def test_a_refused_assume_role_stops_the_sink_naming_the_keys_and_keeping_the_data(moto, state_dir):
    bucket = moto.new_bucket("aws-security-data-lake-us-east-1")
    async with AwsProxy(moto.endpoint_url) as proxy:
        proxy.refuse_when = lambda call: (
            (
                403,
                "AccessDenied",
                "User: arn:aws:iam::123456789012:user/x is not authorized to perform: "
                "sts:AssumeRole on resource: " + ROLE,
            )
            if b"Action=AssumeRole" in call.body
            else None
        )
        settings = lake_settings(proxy.endpoint_url, bucket, role_arn=ROLE, external_id=EXTERNAL_ID)
        sink = await started(settings, state_dir)
        with pytest.raises(SinkFatalError) as caught:
            await sink.send(old_and_spread()[:5])
        probe = await sink.probe()
        await sink.close()
    message = str(caught.value)
    assert "sts:AssumeRole" in message and "check role_arn and external_id" in message
    assert EXTERNAL_ID not in message and EXTERNAL_ID not in sink.health().last_error  # type: ignore[operator]
    assert sink.health().state is SinkState.FAILED
    assert not probe.ok and "sources.authentication" in probe.detail
    assert not objects(moto, bucket) and not proxy.of("PutObject")


async def test_a_refused_upload_stops_the_sink_naming_the_source_and_the_permission(moto, state_dir):
    bucket = moto.new_bucket("aws-security-data-lake-us-east-1")
    async with AwsProxy(moto.endpoint_url) as proxy:
        proxy.refuse["PutObject"].extend([(403, "AccessDenied", "Access Denied")] * 20)
        config = lake_config(proxy.endpoint_url, bucket, streams=["*_history"])
        config["sources"] = {"entity_management": config["sources"]["entity_management"]}
        sink = await started(SecurityLakeSinkSettings.model_validate(config), state_dir)
        with pytest.raises(SinkFatalError) as caught:
            await sink.send([e for e in old_and_spread() if e.stream.endswith("_history")])
        await sink.close()
    message = str(caught.value)
    assert "missing permission s3:PutObject" in message
    assert f"(sources.entity_management, s3://{bucket}/ext/sdm_entity_mgmt/)" in message
    assert not objects(moto, bucket)


async def test_probe_writes_an_empty_object_of_the_class_schema_under_each_source(moto, state_dir):
    bucket = moto.new_bucket("aws-security-data-lake-us-east-1")
    sink = SecurityLakeSink(lake_settings(moto.endpoint_url, bucket), state_dir=state_dir)
    result = await sink.probe()
    assert result.ok, result.detail
    stored = objects(moto, bucket)
    assert len(stored) == len(SOURCES)
    today = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
    for key, body in stored.items():
        source = key.split("/")[1]
        assert key.endswith(
            f"/region={REGION}/accountId={ACCOUNT}/eventDay={today}/auditstream-check-lake.parquet"
        )
        table = read(body)
        assert table.num_rows == 0 and table.schema == lake.arrow_schema(lake.CLASS_UIDS[_key_of(source)])


def _key_of(source_name: str) -> str:
    return next(key for key, name in SOURCES.items() if name == source_name)


async def test_a_record_of_a_class_without_a_source_is_dead_lettered_naming_the_key(moto, state_dir):
    bucket = moto.new_bucket("aws-security-data-lake-us-east-1")
    sink = await started(lake_settings(moto.endpoint_url, bucket), state_dir)
    unknown = Envelope(
        "future_stream", "f-1", 1_714_564_800 * 10**9, {"logType": "future_stream", "id": "f-1"}
    )
    known = old_and_spread()[:3]
    await sink.send([unknown, *known])
    await sink.close()
    (line,) = sink.dead_letter.path.read_text().splitlines()
    entry = orjson.loads(line)
    assert "add sources.base_event" in entry["reason"]
    assert orjson.loads(entry["event"])["class_uid"] == 0
    _, seen = read_back(moto, bucket)
    assert set(seen) == {e.key for e in known}
