"""Fill any SDK entity message (User, Postgres, Workflow, ...) with plausible values.

The 26 history streams carry about forty entity types (119 resource kinds alone), so
values come from field-name rules drawing on the shared vocabulary rather than from a
hand-written builder per type. Secrets (passwords, private keys, tokens) stay empty, as
the real API never returns them. Polymorphic entities (Account, Node, Resource,
SecretStore) get a realistic oneof member chosen by the caller; members the SDK cannot
convert (``Node.ai_router``) are never filled, or every SDK listing of the stream breaks.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable
from typing import Any

from strongdm import constants

from auditstream.emulator.data.vocabulary import REGIONS, Vocabulary

NANOS = 1_000_000_000

# Oneof members the installed SDK cannot convert to its models (it raises UnknownError).
SDK_UNCONVERTIBLE: dict[str, frozenset[str]] = {"v1.Node": frozenset({"ai_router"})}

_SECRET_MARKERS = ("password", "secret", "private", "client_key", "token", "certificate", "credential", "psk")
_SAFE_WITH_MARKER = frozenset({"key_type", "public_key"})

ACCESS_REQUEST_STATUSES = ("pending", "approved", "denied", "timed out", "canceled", "granted")
ACCESS_REQUEST_EVENT_TYPES = ("requested", "approved", "denied", "canceled", "timed out", "granted")

POLICY_TEXT = (
    'forbid (\n  principal,\n  action == SDM::Action::"delete",\n  resource\n) when {\n'
    '  resource.tags["env"] == "prod"\n};'
)


class EntityFiller:
    """Fills messages field by field; ``pick_*`` helpers keep ids consistent with the vocabulary."""

    def __init__(self, vocab: Vocabulary, rng: random.Random, now_ns: int) -> None:
        self.vocab = vocab
        self.rng = rng
        self.now_ns = now_ns
        v = vocab
        self._id_pools: dict[str, Callable[[], str]] = {
            "account_id": lambda: rng.choice(v.people).id,
            "actor_id": lambda: rng.choice(v.people).id,
            "manager_id": lambda: rng.choice(v.people).id,
            "resolved_manager_id": lambda: rng.choice(v.people).id,
            "resource_id": lambda: rng.choice(v.resources).id,
            "role_id": lambda: rng.choice(v.roles).id,
            "group_id": lambda: rng.choice(v.groups).id,
            "workflow_id": lambda: rng.choice(v.workflows).id,
            "approval_flow_id": lambda: rng.choice(v.approval_flows).id,
            "identity_set_id": lambda: rng.choice(v.identity_sets).id,
            "remote_identity_group_id": lambda: rng.choice(v.remote_identity_groups).id,
            "secret_store_id": lambda: rng.choice(v.secret_stores).id if rng.random() < 0.3 else "",
            "proxy_cluster_id": lambda: "",
            "external_id": lambda: f"00u{rng.getrandbits(48):012x}",
        }

    # --- values ------------------------------------------------------------------------

    def past_ns(self, max_days: float = 400) -> int:
        return self.now_ns - int(self.rng.uniform(60, max_days * 86400) * NANOS)

    def future_ns(self, max_days: float = 30) -> int:
        return self.now_ns + int(self.rng.uniform(3600, max_days * 86400) * NANOS)

    def set_time(self, ts: Any, ns: int) -> None:
        ts.seconds, ts.nanos = divmod(ns, NANOS)

    def tags(self, tags: Any) -> None:
        rng, v = self.rng, self.vocab
        tags.pairs.add(name="env", value=rng.choice(("prod", "staging", "dev")))
        tags.pairs.add(name="team", value=v.text(rng.choice(("platform", "data", "payments")), 0.2))
        if rng.random() < 0.3:
            tags.pairs.add(name="cost-center", value=str(rng.randrange(1000, 9999)))

    def _string(self, name: str, message_name: str) -> str | None:
        rng, v = self.rng, self.vocab
        if name in self._id_pools:
            return self._id_pools[name]()
        if name.endswith("_id"):
            return v.mint.new(name[:2] + "-")
        rules: dict[str, Callable[[], str]] = {
            "email": lambda: rng.choice(v.people).email,
            "first_name": lambda: rng.choice(v.people).first_name,
            "last_name": lambda: rng.choice(v.people).last_name,
            "username": lambda: rng.choice(("ubuntu", "ec2-user", "app", "readonly", "deploy")),
            "hostname": lambda: f"{message_name.lower()}-{rng.randrange(1, 40):02d}.internal.acme.example",
            "database": lambda: rng.choice(("app", "analytics", "billing")),
            "description": lambda: v.text(
                f"Managed by {rng.choice(('terraform', 'the platform team', 'SCIM'))}", 0.3
            ),
            "reason": lambda: v.text(
                rng.choice(("Incident INC-4711", "Quarterly access review", "Hotfix")), 0.3
            ),
            "status": lambda: rng.choice(ACCESS_REQUEST_STATUSES),
            "state": lambda: rng.choice((constants.NodeState.STARTED,) * 4 + (constants.NodeState.STOPPED,)),
            "permission_level": lambda: rng.choice(
                (constants.PermissionLevel.USER,) * 5
                + (constants.PermissionLevel.ADMIN, constants.PermissionLevel.AUDITOR)
            ),
            "permission_levelRW": lambda: "",
            "managed_by": lambda: rng.choice(("", "", "scim")),
            "source": lambda: rng.choice(("", "okta", "azure")),
            "region": lambda: rng.choice(REGIONS),
            "location": lambda: rng.choice(REGIONS),
            "version": lambda: rng.choice(("46.21.0", "46.18.1", "45.66.0")),
            "uuid": lambda: str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "address": lambda: f"{rng.choice(v.ips)}:5000",
            "listen_address": lambda: f"gw-{rng.randrange(1, 9)}.acme.example:5000",
            "bind_address": lambda: "0.0.0.0:5000",
            "gateway_filter": lambda: "",
            "egress_filter": lambda: rng.choice(("", 'tags["region"] == "us-east-1"')),
            "subdomain": lambda: "",
            "access_rules": lambda: json.dumps([{"tags": {"env": rng.choice(("prod", "staging"))}}]),
            "access_rule": lambda: json.dumps({"tags": {"team": rng.choice(("data", "sre"))}}),
            "policy": lambda: POLICY_TEXT,
            "metadata": lambda: json.dumps({"comment": v.text("looks good", 0.3)}),
            "quantifier": lambda: rng.choice(("any", "all")),
            "approval_mode": lambda: rng.choice(("automatic", "manual")),
            "reference": lambda: rng.choice(("", constants.ApproverReference.MANAGER_OF_REQUESTER)),
            "account_type": lambda: rng.choice(("api", "admin-token")),
            "requester_name": lambda: rng.choice(v.people).full_name,
            "group_name": lambda: rng.choice(v.groups).name,
            "role_name": lambda: rng.choice(v.roles).name,
            "namespace": lambda: rng.choice(("", "admin")),
            "server_address": lambda: "https://vault.acme.example:8200",
            "role_arn": lambda: f"arn:aws:iam::123456789012:role/{rng.choice(('sdm-read', 'sdm-admin'))}",
            "key_type": lambda: constants.SSHKeyType.ED_25519,
            "public_key": lambda: f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{rng.getrandbits(128):032x} sdm",
            "healthcheck_namespace": lambda: "default",
            "employee_number": lambda: str(rng.randrange(10000, 99999)),
        }
        rule = rules.get(name)
        return rule() if rule else None

    # --- messages ----------------------------------------------------------------------

    def fill(self, message: Any, *, depth: int = 0, skip: frozenset[str] = frozenset()) -> Any:
        """Fill the plain fields of ``message`` in place (oneofs are left to the caller)."""
        descriptor = message.DESCRIPTOR
        for field in descriptor.fields:
            name = field.name
            if name in skip or field.containing_oneof is not None:
                continue
            if any(marker in name.lower() for marker in _SECRET_MARKERS) and name not in _SAFE_WITH_MARKER:
                continue
            if field.message_type is not None:
                self._fill_message_field(message, field, depth)
            elif field.is_repeated:
                continue
            elif field.type == field.TYPE_STRING:
                value = self._string(name, descriptor.name)
                if name == "id" and value is None:
                    value = self.vocab.mint.new(_prefix(descriptor.name))
                if name == "name" and value is None:
                    value = self.vocab.text(f"{descriptor.name.lower()}-{self.rng.randrange(1, 500)}", 0.15)
                if value is not None:
                    setattr(message, name, value)
            elif field.type == field.TYPE_BOOL:
                rate = (
                    0.05 if name.startswith("suspended") else (0.9 if name in ("healthy", "enabled") else 0.4)
                )
                setattr(message, name, self.rng.random() < rate)
            elif field.type in (field.TYPE_INT32, field.TYPE_INT64, field.TYPE_UINT32, field.TYPE_UINT64):
                setattr(message, name, self._integer(name))
        return message

    def _integer(self, name: str) -> int:
        rng = self.rng
        if name == "port":
            return rng.choice((5432, 3306, 22, 443, 6379, 3389))
        if name == "port_override":
            return rng.randrange(10000, 20000)
        if name == "duration":
            return rng.choice((3600, 14400, 86400))
        if name == "step_order":
            return rng.randrange(1, 4)
        return rng.randrange(0, 10)

    def _fill_message_field(self, message: Any, field: Any, depth: int) -> None:
        full = field.message_type.full_name
        name = field.name
        if field.is_repeated:
            return
        sub = getattr(message, name)
        if full == "v1.Tags":
            self.tags(sub)
        elif full == "google.protobuf.Timestamp":
            if name in ("valid_until", "expires_at", "deadline"):
                self.set_time(sub, self.future_ns())
            elif name in (
                "created_at",
                "granted_at",
                "start_from",
                "status_at",
                "time",
                "updated_at",
                "rekeyed",
            ):
                self.set_time(sub, self.past_ns())
        elif full == "google.protobuf.Duration":
            sub.seconds = self.rng.choice((900, 3600, 4 * 3600, 86400))
        elif depth < 1 and not field.message_type.oneofs:
            self.fill(sub, depth=depth + 1)


def _prefix(message_name: str) -> str:
    initials = "".join(ch for ch in message_name if ch.isupper()).lower() or message_name[:2].lower()
    return f"{initials}-"


def choose_member(message: Any, preferred: tuple[str, ...], rng: random.Random) -> Any:
    """Activate one oneof member of a polymorphic entity and return the sub-message."""
    descriptor = message.DESCRIPTOR
    banned = SDK_UNCONVERTIBLE.get(descriptor.full_name, frozenset())
    names = [n for n in preferred if n in descriptor.fields_by_name and n not in banned]
    if not names:
        names = [f.name for f in descriptor.oneofs[0].fields if f.name not in banned]
    member = getattr(message, rng.choice(names))
    member.SetInParent()
    return member
