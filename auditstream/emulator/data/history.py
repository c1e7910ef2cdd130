"""History records for the 26 ``*_history`` streams.

Each stream gets a pool of distinct entities (distinct by ``registry.entity_key``); a
record is a reused header (``activity_id``, ``timestamp``, sometimes ``deleted_at``)
concatenated with a pooled, pre-serialized entity. One activity sometimes touches several
entities: those records share ``activity_id`` and ``timestamp`` but never an entity, so
their registry keys stay unique.
"""

from __future__ import annotations

import random
from typing import Any

from auditstream.emulator.data.entities import EntityFiller, choose_member
from auditstream.emulator.data.vocabulary import Named, Vocabulary
from auditstream.emulator.store import Row
from auditstream.sdm.registry import StreamSpec, entity_key

NANOS = 1_000_000_000
POOL_TARGET = 48

NODE_MEMBERS = {"relay": "relay", "gateway": "gateway", "proxy_cluster": "proxy_cluster"}
SECRET_STORE_MEMBERS = ("vault_token", "vault_app_role", "aws", "azure", "gcp", "cyberark_conjur")


class HistoryFactory:
    def __init__(self, spec: StreamSpec, vocab: Vocabulary, rng: random.Random, filler: EntityFiller) -> None:
        assert spec.entity_field is not None
        self.spec = spec
        self._vocab = vocab
        self._rng = rng
        self._filler = filler
        self._entity_field = spec.entity_field
        descriptor = spec.record_class.DESCRIPTOR
        self._entity_class = descriptor.fields_by_name[self._entity_field].message_type._concrete_class
        self._has_deleted_at = "deleted_at" in descriptor.fields_by_name
        self._single = self._entity_class.DESCRIPTOR.full_name == "v1.Organization"
        self._pool = self._build_pool()
        self._header = spec.record_class()

    # --- entity pool -------------------------------------------------------------------

    def _build_pool(self) -> list[tuple[str, bytes]]:
        pool: dict[str, bytes] = {}
        attempts = 0
        for entity in self._seeded_entities():
            self._add(pool, entity)
        while len(pool) < POOL_TARGET and attempts < POOL_TARGET * 4:
            attempts += 1
            self._add(pool, self._generic_entity())
        return list(pool.items())

    def _add(self, pool: dict[str, bytes], entity: Any) -> None:
        record = self.spec.record_class()
        getattr(record, self._entity_field).CopyFrom(entity)
        key = entity_key(entity)
        if self._single:  # one organization, many settings changes: keep every variant
            key = f"{key}#{len(pool)}"
        pool.setdefault(key, record.SerializeToString())

    def _generic_entity(self) -> Any:
        entity = self._entity_class()
        full = entity.DESCRIPTOR.full_name
        rng, v, fill = self._rng, self._vocab, self._filler
        if full == "v1.Account":
            return self._account(rng.random())
        if full == "v1.Node":
            return self._node(rng.choice(v.nodes))
        if full == "v1.Resource":
            return self._resource(rng.randrange(len(v.resources)))
        if full == "v1.SecretStore":
            member = choose_member(entity, SECRET_STORE_MEMBERS, rng)
            fill.fill(member)
            return entity
        if full == "v1.Organization":
            return self._organization()
        return fill.fill(entity)

    def _seeded_entities(self) -> list[Any]:
        """Entities the rest of the data refers to, with the vocabulary's ids and names."""
        v = self._vocab
        full = self._entity_class.DESCRIPTOR.full_name
        named: dict[str, list[Named]] = {
            "v1.Role": v.roles,
            "v1.Group": v.groups,
            "v1.Workflow": v.workflows,
            "v1.ApprovalWorkflow": v.approval_flows,
            "v1.IdentitySet": v.identity_sets,
            "v1.RemoteIdentityGroup": v.remote_identity_groups,
            "v1.Policy": v.policies,
        }
        if full in named:
            out = []
            for item in named[full]:
                entity = self._filler.fill(self._entity_class(), skip=frozenset({"id", "name"}))
                entity.id, entity.name = item.id, item.name
                out.append(entity)
            return out
        if full == "v1.Account":
            return [self._account(self._rng.random()) for _ in range(POOL_TARGET)]
        if full == "v1.Node":
            return [self._node(node) for node in v.nodes]
        if full == "v1.Resource":
            return [self._resource(i) for i in range(len(v.resources))]
        if full == "v1.SecretStore":
            out = []
            for store in v.secret_stores:
                entity = self._entity_class()
                member = getattr(entity, store.kind)
                self._filler.fill(member, skip=frozenset({"id", "name"}))
                member.id, member.name = store.id, store.name
                out.append(entity)
            return out
        if full == "v1.Organization":
            return [self._organization() for _ in range(12)]
        return []

    def _account(self, draw: float) -> Any:
        v, rng = self._vocab, self._rng
        entity = self._entity_class()
        if draw < 0.8:
            person = rng.choice(v.people)
            user = entity.user
            self._filler.fill(user, skip=frozenset({"id", "email", "first_name", "last_name", "external_id"}))
            user.id, user.email, user.external_id = person.id, person.email, person.external_id
            user.first_name, user.last_name = person.first_name, person.last_name
        elif draw < 0.93:
            service = rng.choice(v.services)
            self._filler.fill(entity.service, skip=frozenset({"id", "name"}))
            entity.service.id, entity.service.name = service.id, service.name
        else:
            token = rng.choice(v.tokens)
            self._filler.fill(entity.token, skip=frozenset({"id", "name"}))
            entity.token.id, entity.token.name = token.id, token.name
            entity.token.permissions.extend(["audit:activities", "audit:queries"])
        return entity

    def _node(self, node: Named) -> Any:
        entity = self._entity_class()
        member = getattr(entity, NODE_MEMBERS[node.kind])
        self._filler.fill(member, skip=frozenset({"id", "name"}))
        member.id, member.name = node.id, node.name
        return entity

    def _resource(self, index: int) -> Any:
        info = self._vocab.resources[index]
        entity = self._entity_class()
        member = getattr(entity, info.kind)
        self._filler.fill(member, skip=frozenset({"id", "name", "hostname", "port"}))
        member.id, member.name = info.id, info.name
        fields = member.DESCRIPTOR.fields_by_name
        if "hostname" in fields:
            member.hostname = info.hostname
        if "port" in fields:
            member.port = info.port
        return entity

    def _organization(self) -> Any:
        v, rng = self._vocab, self._rng
        org = self._filler.fill(self._entity_class(), skip=frozenset({"id", "name", "log_config"}))
        org.id, org.name = v.org_id, v.org_name
        org.kind = "root"
        org.auth_provider = rng.choice(("okta", "google", "strongdm"))
        org.mfa_provider = rng.choice(("", "duo", "totp"))
        org.log_remote_encoder = rng.choice(("strongdm", "pubkey"))
        org.log_local_storage, org.log_local_format = rng.choice((("stdout", "json"), ("file", "csv")))
        org.log_local_encoder = "plaintext"
        return org

    # --- records -----------------------------------------------------------------------

    def activity(self, time_ns: int, entities: int = 1) -> list[Row]:
        """Records of one activity touching ``entities`` distinct entities."""
        entities = 1 if self._single else max(1, min(entities, len(self._pool)))
        header = self._header
        header.Clear()
        header.activity_id = self._vocab.mint.new("at-")
        header.timestamp.seconds, header.timestamp.nanos = divmod(time_ns, NANOS)
        if self._has_deleted_at and self._rng.random() < 0.08:
            header.deleted_at.seconds, header.deleted_at.nanos = divmod(time_ns, NANOS)
        head = header.SerializeToString()
        rows = []
        for entity_id, body in self._rng.sample(self._pool, entities):
            key = f"{header.activity_id}:{entity_id.split('#', 1)[0]}"
            rows.append(Row(head + body, key, time_ns, 0))
        return rows

    def entity_count_draw(self) -> int:
        return 1 if self._rng.random() < 0.85 else self._rng.randint(2, 3)
