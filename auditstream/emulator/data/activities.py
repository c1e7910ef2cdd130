"""Activity records: verbs and entity types from the SDK's own constants.

Building a protobuf message per record is too slow for 1,000,000 records, so a pool of
complete activity *bodies* (verb, description, actor, entities, ip, user agent) is built
once with the SDK class and serialized; each record is then one small reused message
(``id`` + ``completed_at``) serialized and concatenated with a body. Concatenating two
serializations of the same message type is a protobuf merge (the wire format guarantees
it), so clients parse exactly the record they would get from one ``SerializeToString``.
"""

from __future__ import annotations

import random

from strongdm import activities_pb2, constants

from auditstream.emulator.data.vocabulary import USER_AGENTS, Vocabulary
from auditstream.emulator.store import Row

NANOS = 1_000_000_000
E = constants.ActivityEntityType

# Verb constant name prefix -> entity type it acts on (first match wins).
_VERB_ENTITY: tuple[tuple[str, str], ...] = (
    ("USER_O_AUTH_TOKEN", E.USER_O_AUTH_TOKEN),
    ("SERVICE_ACCOUNT", E.USER),
    ("ADMIN_TOKEN", E.USER),
    ("SCIM_TOKEN", E.USER),
    ("SERVICE_NOW_TOKEN", E.USER),
    ("API_KEY", E.USER),
    ("ROLE_", E.ROLE),
    ("DATASOURCE", E.DATASOURCE),
    ("MULTIPLE_DATASOURCE", E.DATASOURCE),
    ("SERVER_", E.DATASOURCE),
    ("MULTIPLE_SERVER", E.DATASOURCE),
    ("CLUSTER_", E.DATASOURCE),
    ("MULTIPLE_CLUSTER", E.DATASOURCE),
    ("CLOUD_", E.DATASOURCE),
    ("WEBSITE_", E.DATASOURCE),
    ("RESOURCE_", E.DATASOURCE),
    ("INSTALLATION", E.INSTALLATION),
    ("RELAY_INSTALLATION", E.INSTALLATION),
    ("RELAY_", E.NODE),
    ("ORG_INTEGRATION", E.ORG_INTEGRATION),
    ("USER_INTEGRATION", E.ORG_INTEGRATION),
    ("ORG_", E.ORGANIZATION),
    ("CHILD_ORG", E.ORGANIZATION),
    ("SECRET_STORE", E.SECRET_STORE),
    ("SECRET_ENGINE", E.SECRET_ENGINE),
    ("TRUST_DOMAIN", E.TRUST_DOMAIN),
    ("REMOTE_IDENTITY_GROUP", E.REMOTE_IDENTITY_GROUP),
    ("REMOTE_IDENTITY", E.REMOTE_IDENTITY),
    ("IDENTITY_SET", E.IDENTITY_SET),
    ("IDENTITY_ALIAS", E.IDENTITY_ALIAS),
    ("ACCESS_REQUEST", E.ACCESS_REQUEST),
    ("WORKFLOW", E.WORKFLOW),
    ("DEPRECATED_WORKFLOW", E.WORKFLOW),
    ("APPROVAL_FLOW_STEP", E.APPROVAL_FLOW_STEP),
    ("APPROVAL_FLOW_APPROVER", E.APPROVAL_FLOW_APPROVER),
    ("APPROVAL_FLOW", E.APPROVAL_FLOW),
    ("MANAGED_SECRET", E.MANAGED_SECRET),
    ("PEERING_GROUP", E.PEERING_GROUP),
    ("CREDENTIAL", E.CREDENTIAL),
    ("CERTIFICATE_AUTHORITY", E.CERTIFICATE_AUTHORITY),
    ("POLICY", E.POLICY),
    ("AUTHENTICATION_REVOKED", E.POLICY),
    ("PROXY_CLUSTER_KEY", E.PROXY_CLUSTER_KEY),
)
# Logins dominate real activity feeds.
_FREQUENT = ("LOGGED_INTO", "LOGGED_OUT", "ACCESS_REQUEST", "FAILED_LOGIN", "TEMPORARY_ACCESS")


def verb_catalog() -> list[tuple[str, str, int]]:
    """``(verb, entity type, weight)`` for every verb the SDK knows."""
    catalog = []
    for name, verb in vars(constants.ActivityVerb).items():
        if name.startswith("_") or not isinstance(verb, str):
            continue
        entity = next((etype for prefix, etype in _VERB_ENTITY if name.startswith(prefix)), E.USER)
        weight = 25 if any(mark in name for mark in _FREQUENT) else 1
        catalog.append((verb, entity, weight))
    return catalog


class ActivityFactory:
    def __init__(self, vocab: Vocabulary, rng: random.Random, pool_size: int = 4096) -> None:
        self._vocab = vocab
        self._rng = rng
        catalog = verb_catalog()
        self._verbs = [(verb, entity) for verb, entity, _ in catalog]
        self._weights = [weight for _, _, weight in catalog]
        self._bodies = [self._body() for _ in range(pool_size)]
        self._header = activities_pb2.Activity()

    def _entity(self, entity_type: str) -> activities_pb2.ActivityEntity:
        v, rng = self._vocab, self._rng
        if entity_type == E.USER:
            person = rng.choice(v.people)
            return activities_pb2.ActivityEntity(
                id=person.id,
                type=entity_type,
                name=person.full_name,
                email=person.email,
                external_id=person.external_id,
            )
        pools = {
            E.ROLE: v.roles,
            E.NODE: v.nodes,
            E.SECRET_STORE: v.secret_stores,
            E.WORKFLOW: v.workflows,
            E.APPROVAL_FLOW: v.approval_flows,
            E.IDENTITY_SET: v.identity_sets,
            E.REMOTE_IDENTITY_GROUP: v.remote_identity_groups,
            E.POLICY: v.policies,
        }
        if entity_type == E.DATASOURCE:
            resource = rng.choice(v.resources)
            return activities_pb2.ActivityEntity(id=resource.id, type=entity_type, name=resource.name)
        if entity_type == E.ORGANIZATION:
            return activities_pb2.ActivityEntity(id=v.org_id, type=entity_type, name=v.org_name)
        if entity_type in pools:
            named = rng.choice(pools[entity_type])
            return activities_pb2.ActivityEntity(id=named.id, type=entity_type, name=named.name)
        return activities_pb2.ActivityEntity(
            id=v.mint.new("ent-"),
            type=entity_type,
            name=f"{entity_type.replace('_', ' ')} {rng.randrange(1000)}",
        )

    def _body(self) -> bytes:
        v, rng = self._vocab, self._rng
        verb, entity_type = rng.choices(self._verbs, self._weights)[0]
        actor_is_service = rng.random() < 0.1
        body = activities_pb2.Activity(
            verb=verb, ip_address=rng.choice(v.ips), user_agent=rng.choice(USER_AGENTS)
        )
        if actor_is_service:
            service = rng.choice(v.services)
            body.actor.id, body.actor.first_name = service.id, service.name
            actor_name = service.name
        else:
            person = rng.choice(v.people)
            body.actor.id, body.actor.email = person.id, person.email
            body.actor.first_name, body.actor.last_name = person.first_name, person.last_name
            body.actor.activity_external_id = person.external_id
            actor_name = person.full_name
        count = 1 if rng.random() < 0.85 else rng.randint(2, 4)
        entities = [self._entity(entity_type) for _ in range(count)]
        body.entities.extend(entities)
        names = ", ".join(entity.name for entity in entities)
        body.description = v.text(f"{actor_name} {verb}: {names}.", 0.3)
        serialized: bytes = body.SerializeToString()
        return serialized

    def make(self, time_ns: int) -> Row:
        return self.make_many([time_ns])[0]

    def make_many(self, times: list[int]) -> list[Row]:
        """One record per time; the bulk path that keeps 1,000,000 records to seconds."""
        header = self._header
        completed = header.completed_at
        serialize = header.SerializeToString
        new_id = self._vocab.mint.new
        bodies = self._rng.choices(self._bodies, k=len(times))
        rows = []
        for time_ns, body in zip(times, bodies, strict=True):
            record_id = new_id("at-")
            header.id = record_id
            completed.seconds, completed.nanos = divmod(time_ns, NANOS)
            rows.append(Row(serialize() + body, record_id, time_ns, 0))
        return rows
