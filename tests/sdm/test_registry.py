import importlib
import pkgutil
from pathlib import Path

import pytest
import strongdm
from strongdm import accounts_history_pb2, activities_pb2, nodes_history_pb2, resources_history_pb2

from auditstream.sdm.registry import (
    ALL_STREAM_NAMES,
    DEFAULT_STREAM_NAMES,
    REPLAY_CHUNKS,
    STREAMS,
    StreamKind,
    entity_key,
    select_streams,
)

SDK_MODULE = {"managed_secret_logs": "managed_secrets", "replays": "queries", "replay_chunks": "replays"}


def sdk_history_attributes():
    client = strongdm.Client("auth-x", "AAAA", host="127.0.0.1:1", insecure=True)
    return sorted(name for name in vars(client) if name.endswith("_history"))


def test_every_history_service_the_sdk_ships_is_registered():
    history = sorted(s.name for s in STREAMS.values() if s.kind is StreamKind.HISTORY)
    assert len(history) == 26
    assert history == sdk_history_attributes()
    modules = sorted(
        m.name[:-4] for m in pkgutil.iter_modules(strongdm.__path__) if m.name.endswith("_history_pb2")
    )
    assert history == modules
    assert ALL_STREAM_NAMES[:2] == ("activities", "queries")
    assert ALL_STREAM_NAMES[-2:] == ("managed_secret_logs", "replays")
    assert len(ALL_STREAM_NAMES) == 30


def test_a_wildcard_leaves_out_the_opt_in_replays_but_its_name_selects_it():
    assert "replays" not in DEFAULT_STREAM_NAMES
    assert [s.name for s in select_streams(["*"])] == list(DEFAULT_STREAM_NAMES)
    assert "managed_secret_logs" in DEFAULT_STREAM_NAMES
    assert "replays" not in [s.name for s in select_streams(["*s"])]
    assert [s.name for s in select_streams(["replays"])] == ["replays"]
    with pytest.raises(ValueError, match="matches no stream"):
        select_streams(["repl*"])


@pytest.mark.parametrize("name", [*ALL_STREAM_NAMES, "replay_chunks"])
def test_spec_matches_the_sdk_service(name):
    spec = REPLAY_CHUNKS if name == "replay_chunks" else STREAMS[name]
    module = importlib.import_module(f"strongdm.{SDK_MODULE.get(name, name)}_pb2")
    service = module.DESCRIPTOR.services_by_name[spec.service]
    method = service.methods_by_name[spec.method]
    assert spec.method == ("Logs" if name == "managed_secret_logs" else "List")
    assert spec.request_class.DESCRIPTOR is method.input_type
    assert spec.response_class.DESCRIPTOR is method.output_type
    assert spec.method_path == f"/v1.{spec.service}/{spec.method}"
    assert spec.signing_name == f"{spec.service}.{spec.method}"
    assert (
        spec.response_class.DESCRIPTOR.fields_by_name[spec.records_field].message_type
        is spec.record_class.DESCRIPTOR
    )
    # the SDK signs with the same method name
    svc_source = importlib.import_module("strongdm.svc")
    assert f"'{spec.signing_name}'" in Path(svc_source.__file__).read_text()


def test_irregular_names_resolve():
    assert STREAMS["organization_history"].record_class.DESCRIPTOR.name == "OrganizationHistoryRecord"
    assert STREAMS["policies_history"].request_class.DESCRIPTOR.name == "PoliciesHistoryListRequest"
    assert STREAMS["activities"].time_field == "completed_at"
    assert STREAMS["queries"].time_field == "timestamp"


def test_history_keys_distinguish_entities_of_one_activity():
    spec = STREAMS["accounts_history"]
    a = accounts_history_pb2.AccountHistory(activity_id="act1")
    a.account.user.id = "u1"
    b = accounts_history_pb2.AccountHistory(activity_id="act1")
    b.account.service.id = "s1"
    assert spec.record_key(a) != spec.record_key(b)
    assert spec.record_key(a) == "act1:user:u1"


def test_entity_keys_for_polymorphic_and_idless_entities():
    node = nodes_history_pb2.NodeHistory(activity_id="x")
    node.node.gateway.id = "n1"
    assert entity_key(node.node) == "gateway:n1"
    res = resources_history_pb2.ResourceHistory(activity_id="x")
    res.resource.postgres.id = "rs-1"
    assert entity_key(res.resource) == "postgres:rs-1"
    from strongdm import account_resources_pb2, organization_history_pb2

    ar = account_resources_pb2.AccountResource(account_id="a1", resource_id="r1")
    assert entity_key(ar) == "account_id=a1,resource_id=r1"
    assert entity_key(organization_history_pb2.Organization(name="Acme")) == "name=Acme"


def test_activity_time_in_nanoseconds():
    act = activities_pb2.Activity(id="a")
    act.completed_at.seconds, act.completed_at.nanos = 10, 5
    assert STREAMS["activities"].record_time_ns(act) == 10_000_000_005


def test_select_streams_globs_and_typos():
    assert [s.name for s in select_streams(["queries", "activities"])] == ["activities", "queries"]
    assert len(select_streams(["*_history"])) == 26
    with pytest.raises(ValueError, match="matches no stream"):
        select_streams(["activity"])


@pytest.mark.parametrize("name", ALL_STREAM_NAMES)
def test_record_facts_agree_with_the_key_time_and_relist_rules(name):
    from tests.formats import samples

    spec = STREAMS[name]
    records = [samples.sample(name)]
    sessions = spec.kind in (StreamKind.QUERY, StreamKind.REPLAY)  # both list the Queries service
    if sessions:
        records += list(samples.query_pair())  # an open start record and its completion
    empty = spec.record_class()  # no time, no id: keys and times still agree
    for record in [*records, empty]:
        time_ns = spec.record_time_ns(record)
        relist_ns = time_ns
        if sessions:  # remembered until the later of start and completion
            done = record.completed_at
            relist_ns = max(time_ns, done.seconds * 1_000_000_000 + done.nanos)
        assert spec.record_facts(record) == (spec.record_key(record), time_ns, relist_ns)
        assert spec.relist_time_ns(record) == relist_ns
    if sessions:
        start, done = samples.query_pair()
        assert spec.record_facts(start)[0].endswith(":start")
        assert spec.record_facts(done)[2] > spec.record_facts(done)[1]
