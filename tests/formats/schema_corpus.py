"""The events the SIEM-schema tests (OCSF, ECS) encode: every stream, every SDK verb, every
query category in each of its states.

* one sample event of each of the 30 streams (``samples``), the content-safety variants and
  a long-running query's start and completion records;
* one activity per verb the installed SDK defines (``strongdm.constants.ActivityVerb``, read
  from the SDK, not typed here), each with a target user, a role and a datasource among its
  entities, as the API's activities carry them;
* one query per category the SDK defines (``strongdm.constants.QueryCategory``; ``all`` is a
  filter value, not a category), started and completed for the long-running ones, with the
  captures the emulator gives them (Kubernetes method and URI, web request lines);
* replay chunks of SSH, Kubernetes and RDP sessions;
* events whose fields redaction dropped or hashed (no address, no email, no time).
"""

from __future__ import annotations

import copy
from typing import Any

from google.protobuf import json_format
from strongdm import constants

from auditstream.formats import to_event
from auditstream.sdm.registry import STREAMS
from tests.formats import samples

Event = dict[str, Any]


def sdk_verbs() -> list[str]:
    """Every activity verb of the installed SDK."""
    return sorted({v for k, v in vars(constants.ActivityVerb).items() if not k.startswith("_")})


def sdk_query_categories() -> list[str]:
    return sorted({v for k, v in vars(constants.QueryCategory).items() if not k.startswith("_")} - {"all"})


VERB_ENTITIES = [
    {"id": "a-0abcdabcdab00002", "type": "user", "name": "Bob Example", "email": "bob@example.com"},
    {"id": "r-0fedcba987654321", "type": "role", "name": "prod-dba"},
    {"id": "rs-0123456789abcdef", "type": "datasource", "name": "prod-db"},
]


def verb_events() -> dict[str, Event]:
    spec = STREAMS["activities"]
    out = {}
    for n, verb in enumerate(sdk_verbs()):
        record = {
            **samples.ACTIVITY,
            "id": f"0CEGCEGCEGCEGCEGCEG{n:09d}",
            "verb": verb,
            "entities": VERB_ENTITIES,
        }
        out[verb] = to_event(spec, json_format.ParseDict(record, spec.record_class()))
    return out


_CAPTURES: dict[str, dict[str, Any]] = {
    "k8s": {
        "type": "k8s-exec",
        "pod": "api-7d9f8-1",
        "container": "api",
        "requestMethod": "POST",
        "requestUri": "/api/v1/namespaces/payments/pods/api-7d9f8-1/exec?command=%2Fbin%2Fsh&stdin=true",
        "clientCommand": "kubectl exec -it api-7d9f8-1 -n payments -- /bin/sh",
    },
    "rdp": {"type": "rdp-basic", "width": 1920, "height": 1080},
}
_BODIES = {
    "web": "GET /d/42/latency?orgId=1",
    "cloud": "aws ec2 describe-instances --region us-east-1",
    "k8s": "kubectl exec -it api-7d9f8-1 -n payments -- /bin/sh",
    "rdp": '{"clientName":"LAPTOP-1","resolution":"1920x1080"}',
    "ssh": '{"command":"bash -l"}',
    "queries": "db.orders.find({})",
}
_TARGETS = {
    "web": "https://grafana.internal.example.com",
    "cloud": "https://console.aws.amazon.com",
    "k8s": "k8s.internal.example.com:6443",
    "rdp": "win-1.internal.example.com:3389",
    "ssh": "10.0.3.7:22",
    "queries": "mongo.internal.example.com:27017/app",
}
_TYPES = {
    "web": "http_auth",
    "cloud": "aws",
    "k8s": "kubernetes",
    "rdp": "rdp",
    "ssh": "ssh",
    "queries": "mongo_host",
}


def query_events() -> dict[str, Event]:
    """A query of every category; long-running ones as start and completion records."""
    spec = STREAMS["queries"]
    out = {}
    for n, category in enumerate(sdk_query_categories()):
        record = {
            **samples.QUERY,
            "id": f"s1Uj1aKxKI4pbWQSNnqS{n:07d}",
            "queryCategory": category,
            "queryBody": _BODIES.get(category, "some request"),
            "target": _TARGETS.get(category, ""),
            "resourceType": _TYPES.get(category, category),
            "remoteIdentityUsername": "ACME\\bob" if category == "rdp" else "",
        }
        if category in _CAPTURES:
            record["capture"] = _CAPTURES[category]
        out[category] = to_event(spec, json_format.ParseDict(record, spec.record_class()))
        if category in ("ssh", "rdp", "k8s"):
            start = {k: v for k, v in record.items() if k not in ("completedAt", "duration")}
            out[f"{category} start"] = to_event(spec, json_format.ParseDict(start, spec.record_class()))
    return out


def replay_events() -> dict[str, Event]:
    chunk = samples.sample_event("replays")
    kube = {**copy.deepcopy(chunk), "queryCategory": "k8s", "resourceType": "kubernetes"}
    kube["capture"] = {**kube["capture"], **_CAPTURES["k8s"]}
    rdp = {**copy.deepcopy(chunk), "queryCategory": "rdp", "resourceType": "rdp", "chunkId": None, "text": ""}
    rdp.pop("events", None)
    return {"ssh replay": chunk, "k8s replay": kube, "rdp replay": rdp}


def redacted_events() -> dict[str, Event]:
    """Fields dropped or replaced by a keyed hash (``[normalize] redact``)."""
    hashed = "hmac-sha256:3f1c9a"
    activity = dict(samples.sample_event("activities"))
    activity.update(ipAddress=hashed, actorEmail=hashed, userAgent="")
    bare_query = {
        k: v
        for k, v in samples.sample_event("queries").items()
        if k
        not in ("clientIp", "sourceIp", "accountId", "accountEmail", "accountFirstName", "accountLastName")
    }
    no_target = {**samples.sample_event("queries"), "target": "", "resourceName": "", "resourceId": ""}
    timeless = {k: v for k, v in samples.sample_event("roles_history").items() if k != "timestamp"}
    return {
        "activity, hashed address and email": activity,
        "query without account or address": bare_query,
        "query without target": no_target,
        "history without time": timeless,
    }


def stream_events() -> dict[str, Event]:
    events = {f"stream {name}": event for name, event in samples.all_sample_events().items()}
    query, chunk = samples.content_safety_events()
    events["query, content safety"] = query
    events["replay, content safety"] = chunk
    start, done = samples.query_pair()
    events["query pair, start"] = to_event(STREAMS["queries"], start)
    events["query pair, completion"] = to_event(STREAMS["queries"], done)
    return events


def corpus() -> dict[str, Event]:
    """Every event the schema tests encode, by a name saying what it is."""
    return {
        **stream_events(),
        **{f"verb {verb}": event for verb, event in verb_events().items()},
        **{f"query {name}": event for name, event in query_events().items()},
        **replay_events(),
        **redacted_events(),
    }
