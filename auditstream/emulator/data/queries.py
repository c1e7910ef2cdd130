"""Query records: realistic bodies per category, and long-running sessions as two records.

Like activities, records are a small reused header message (id, times, duration, record
count) serialized and concatenated with a pooled body built with the SDK class.

A long-running SSH, RDP or Kubernetes session is two records with one ``id``: the start
record (``completed_at`` and ``duration`` unset) and the completion record (same ``id``
and ``timestamp``, ``completed_at`` and ``duration`` set).

What a record is given when it is made (``_take``), not when its pooled body is built:

* a replay: a session whose capture type is replayable is entered in the ``ReplayBook``
  under its query id (``replayable`` is true on the wire exactly for those);
* encryption (``encrypted_fraction``): the body is re-encoded for this query alone, with
  a fresh AES key wrapped to the organisation's public key, so no two queries share a
  key, as with StrongDM. The plaintext is the SQL text, or for SSH, Kubernetes and RDP
  sessions the capture as JSON (``MessageToDict``); ``capture`` is then empty and
  ``replayable`` false on the wire, as only the decrypted JSON tells;
* planted secrets: reported once a record carries them (and for an encrypted record only
  those its plaintext still holds).
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from google.protobuf.json_format import MessageToDict
from strongdm import constants, queries_pb2

from auditstream.emulator.data import secrets as sec
from auditstream.emulator.data.replays import (
    REPLAYABLE_CAPTURE_TYPES,
    EncryptedQuery,
    ReplayBook,
    SessionProfile,
)
from auditstream.emulator.data.vocabulary import ResourceInfo, Vocabulary
from auditstream.emulator.store import Row

if TYPE_CHECKING:
    from auditstream.emulator.crypto import QueryEncryptor

NANOS = 1_000_000_000
Q = constants.QueryCategory
C = constants.CaptureType
LONG_CATEGORIES = (Q.SSH, Q.RDP, Q.KUBERNETES)
CAPTURE_CATEGORIES = frozenset(LONG_CATEGORIES)  # encrypted, their plaintext is the capture JSON

SQL = (
    "SELECT id, email, created_at FROM users WHERE created_at > now() - interval '1 day' "
    "ORDER BY created_at DESC LIMIT 100;",
    "UPDATE orders SET status = 'refunded', updated_at = now() WHERE id = {n};",
    "DELETE FROM sessions WHERE expires_at < now();",
    "SELECT count(*) FROM payments WHERE status = 'failed' AND created_at >= '2024-05-01';",
    "BEGIN; ALTER TABLE invoices ADD COLUMN tax_region text; COMMIT;",
    "EXPLAIN ANALYZE SELECT * FROM events WHERE account_id = {n} AND kind IN ('login', 'logout');",
    "SELECT u.email, r.name FROM users u JOIN roles r ON r.id = u.role_id "
    "WHERE u.email LIKE '%@acme.example';",
    "INSERT INTO feature_flags (name, enabled) VALUES ('new-checkout', true) ON CONFLICT (name) DO UPDATE "
    "SET enabled = excluded.enabled;",
    "SHOW TABLES;",
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE state = 'idle in transaction';",
    "GRANT SELECT ON ALL TABLES IN SCHEMA analytics TO reporting;",
    "WITH recent AS (SELECT * FROM orders WHERE created_at > now() - interval '7 days')\n"
    "SELECT customer_id, sum(total) FROM recent GROUP BY 1 ORDER BY 2 DESC LIMIT 20;",
)
REDIS = ("GET session:{n}", "KEYS user:*", "HGETALL cart:{n}", "DEL rate-limit:{n}", "INFO memory", "FLUSHDB")
MONGO = (
    'db.orders.find({{"status": "pending"}}).limit(20)',
    'db.users.updateOne({{"_id": {n}}}, {{"$set": {{"locked": false}}}})',
    "db.events.aggregate([{{$group: {{_id: '$type', n: {{$sum: 1}}}}}}])",
)
SHELL = (
    "sudo systemctl restart nginx",
    "tail -n 200 /var/log/syslog",
    "cat /etc/passwd | grep -v nologin",
    "ps aux --sort=-%mem | head -20",
    "df -h && du -sh /var/lib/docker",
    "sudo journalctl -u app --since '1 hour ago'",
    "scp backup-{n}.tar.gz ops@10.0.3.7:/srv/backups/",
    "psql -h localhost -U app -c 'select 1'",
    "sudo -i",
    "docker ps --format '{{{{.Names}}}}\\t{{{{.Status}}}}'",
)
PODS = "/api/v1/namespaces/payments/pods"
EXEC_URI = ""  # exec URIs are built with their command= parameters (secrets.exec_request_uri)
# (command line, capture type, HTTP method, request URI)
KUBECTL = (
    ("kubectl get pods -n payments -o wide", C.K_8_S_GET, "GET", PODS),
    ("kubectl exec -it api-7d9f8-{n} -n payments -- /bin/sh", C.K_8_S_EXEC_TTY, "POST", EXEC_URI),
    ("kubectl exec -i api-7d9f8-{n} -n payments -- /bin/sh", C.K_8_S_EXEC, "POST", EXEC_URI),
    ("kubectl logs deploy/api -n payments --since=1h", C.K_8_S_GENERIC, "GET", PODS + "/api-7d9f8-{n}/log"),
    (
        "kubectl delete pod worker-{n} -n jobs",
        C.K_8_S_DELETE,
        "DELETE",
        "/api/v1/namespaces/jobs/pods/worker-{n}",
    ),
    (
        "kubectl port-forward svc/postgres 5432:5432 -n data",
        C.K_8_S_PORT_FORWARD,
        "POST",
        "/api/v1/namespaces/data/pods/postgres-0/portforward",
    ),
    (
        "kubectl apply -f deploy.yaml",
        C.K_8_S_APPLY,
        "PATCH",
        "/apis/apps/v1/namespaces/web/deployments/frontend",
    ),
    ("kubectl describe node ip-10-0-4-{n}.ec2.internal", C.K_8_S_DESCRIBE, "GET", "/api/v1/nodes"),
)
WEB = (
    "GET /api/dashboards/home",
    "POST /api/datasources",
    "GET /d/{n}/latency?orgId=1",
    "DELETE /api/alerts/{n}",
)
CLOUD = (
    "aws ec2 describe-instances --region us-east-1",
    "AWS console sign-in: arn:aws:iam::123456789012:role/ReadOnly",
    "aws s3 ls s3://acme-backups/{n}/",
)
SSH_USERS = ("ubuntu", "ec2-user", "admin", "deploy", "root")


@dataclass(frozen=True, slots=True)
class Body:
    """A pooled query body: every field but the id and the times, serialized."""

    category: str
    payload: bytes
    secrets: tuple[str, ...] = ()  # planted secret values the payload holds
    session: SessionProfile | None = None  # set when the capture type is replayable


@dataclass(frozen=True)
class OpenSession:
    """A long-running query whose start record is out and whose completion is not yet."""

    id: str
    start_ns: int
    body: bytes


@dataclass(frozen=True)
class QueryEncryption:
    """The organisation's key, as ``QueryFactory`` uses it."""

    encryptor: QueryEncryptor
    key_id: str
    fraction: float


class QueryFactory:
    def __init__(
        self,
        vocab: Vocabulary,
        rng: random.Random,
        quantum_ns: int = 1,
        pool_size: int = 2048,
        *,
        planter: sec.SecretPlanter | None = None,
        book: ReplayBook | None = None,
        encryption: QueryEncryption | None = None,
    ) -> None:
        self._vocab = vocab
        self._rng = rng
        self._quantum = quantum_ns
        self.planter = planter or sec.SecretPlanter(0.0, rng)
        self.book = book or ReplayBook(0, self.planter)
        self._encryption = encryption
        self._encrypted: dict[str, EncryptedQuery] = {}
        self._lock = threading.Lock()
        categories = [Q.DATASOURCES] * 10 + [Q.SSH] * 4 + [Q.KUBERNETES] * 3 + [Q.RDP, Q.WEB, Q.CLOUD]
        self._bodies = [self._body(rng.choice(categories)) for _ in range(pool_size)]
        self._long_bodies = [self._body(rng.choice(LONG_CATEGORIES)) for _ in range(max(16, pool_size // 4))]
        self._full = queries_pb2.Query()
        self._start = queries_pb2.Query()

    # --- ground truth ------------------------------------------------------------------

    def encrypted(self, query_id: str) -> EncryptedQuery | None:
        """The key and plaintext of an encrypted query (None: the query is not encrypted)."""
        with self._lock:
            return self._encrypted.get(query_id)

    def encrypted_ids(self) -> set[str]:
        with self._lock:
            return set(self._encrypted)

    # --- bodies ------------------------------------------------------------------------

    def _statement(self, resource: ResourceInfo) -> str:
        n = self._rng.randrange(1, 99999)
        rng = self._rng
        if resource.kind == "redis":
            return rng.choice(REDIS).format(n=n)
        if resource.kind == "mongo_host":
            return rng.choice(MONGO).format(n=n)
        return rng.choice(SQL).format(n=n)

    def _kubernetes(self, q: queries_pb2.Query, n: int) -> tuple[str, tuple[str, ...]]:
        """Fill a Kubernetes capture; returns the command line and the secrets in it."""
        rng = self._rng
        pod, namespace, container = f"api-7d9f8-{n}", "payments", "api"
        secrets: tuple[str, ...] = ()
        if self.planter.draw():
            planted = sec.kubectl_command(rng, pod, namespace)
            body, secrets = planted.planted.text, planted.planted.secrets
            if planted.exec_argv:
                kind, method = C.K_8_S_EXEC, "POST"
                uri = sec.exec_request_uri(f"{PODS}/{pod}", planted.exec_argv, container, tty=False)
            else:
                kind, method = C.K_8_S_GENERIC, "POST"
                uri = f"/api/v1/namespaces/{namespace}/secrets"
                if planted.secret_name != "regcred":
                    # what kubectl really sends: the values base64-encoded in the Secret's data
                    q.capture.request_body = sec.secret_request_body(
                        namespace, planted.secret_name, planted.literals
                    )
        else:
            command, kind, method, uri = rng.choice(KUBECTL)
            body = command.format(n=n)
            if uri == EXEC_URI:
                tty = kind == C.K_8_S_EXEC_TTY
                uri = sec.exec_request_uri(f"{PODS}/{pod}", ["/bin/sh"], container, tty=tty)
            else:
                uri = uri.format(n=n)
        q.capture.type = kind
        q.capture.pod, q.capture.container = pod, container
        q.capture.request_method, q.capture.request_uri = method, uri
        q.capture.client_command = body
        return body, secrets

    def _body(self, category: str) -> Body:
        v, rng = self._vocab, self._rng
        resource = rng.choice(v.resources_in(category))
        person = rng.choice(v.people)
        q = queries_pb2.Query(
            query_category=category,
            resource_id=resource.id,
            resource_name=resource.name,
            resource_type=resource.kind,
            account_id=person.id,
            account_email=person.email,
            account_first_name=person.first_name,
            account_last_name=person.last_name,
            source_ip=rng.choice(v.ips),
            client_ip=rng.choice(v.ips),
            egress_node_id=rng.choice(v.nodes).id,
            authentication_id=v.mint.new("auth-"),
        )
        q.resource_tags.pairs.add(name="env", value=resource.env)
        q.resource_tags.pairs.add(name="team", value=v.text(resource.team, 0.2))
        q.account_tags.pairs.add(name="team", value=person.team)
        n = rng.randrange(1, 999)
        secrets: tuple[str, ...] = ()
        session: SessionProfile | None = None
        host = resource.hostname.split(".", 1)[0]
        if category == Q.DATASOURCES:
            if self.planter.draw():
                body, secrets = sec.datasource_statement(rng, resource.kind)
            else:
                body = self._statement(resource)
            q.target = f"{resource.hostname}:{resource.port}/app"
        elif category == Q.SSH:
            if self.planter.draw():
                body, secrets = sec.shell_command(rng)
                kind = rng.choice((C.SHELL, C.COMMAND))
            else:
                body = rng.choice(SHELL).format(n=n)
                kind = rng.choice((C.SHELL, C.SHELL, C.COMMAND, C.SCP_UPLOAD))
            q.remote_identity_username = rng.choice(SSH_USERS)
            q.target = f"{resource.hostname}:{resource.port}"
            q.capture.type = kind
            q.capture.width, q.capture.height = rng.choice(((80, 24), (120, 40), (213, 57)))
            q.capture.command = body if kind == C.COMMAND else ""
            q.capture.client_command = f"ssh {resource.name}"
            q.capture.env["TERM"] = "xterm-256color"
            q.capture.env["LANG"] = "en_US.UTF-8"
            if kind == C.SCP_UPLOAD:
                q.capture.file_name, q.capture.file_size = f"backup-{n}.tar.gz", rng.randrange(1 << 30)
            width, height = q.capture.width, q.capture.height
            session = SessionProfile(kind, q.remote_identity_username, host, width, height)
        elif category == Q.KUBERNETES:
            body, secrets = self._kubernetes(q, n)
            q.capture.impersonation_user = person.email
            q.capture.impersonation_groups.extend(["system:authenticated", f"{person.team}-engineers"])
            q.identity_alias_username = person.email.split("@")[0]
            session = SessionProfile(q.capture.type, "root", q.capture.pod)
        elif category == Q.RDP:
            width, height = rng.choice(((1920, 1080), (2560, 1440), (1366, 768)))
            body = json.dumps(
                {"clientName": f"LAPTOP-{n}", "resolution": f"{width}x{height}", "keyboard": "en-US"}
            )
            q.remote_identity_username = f"ACME\\{person.email.split('@')[0]}"
            q.target = f"{resource.hostname}:{resource.port}"
            q.capture.type = rng.choice((C.RDP_BASIC, C.RDP_ENHANCED))
            q.capture.width, q.capture.height = width, height
            session = SessionProfile(q.capture.type, q.remote_identity_username, host, width, height)
        elif category == Q.WEB:
            body = rng.choice(WEB).format(n=n)
            q.target = f"https://{resource.hostname}"
        else:
            body = rng.choice(CLOUD).format(n=n)
            q.target = "https://console.aws.amazon.com"
        body = v.text(body, 0.3)
        if session is not None and session.capture_type not in REPLAYABLE_CAPTURE_TYPES:
            session = None
        q.replayable = session is not None
        q.query_body = body
        q.query_hash = hashlib.sha256(body.encode()).hexdigest()
        q.authzJson = json.dumps({"policies": [rng.choice(v.policies).id], "decision": "permit"})
        q.metadata_json = json.dumps(
            {"clientVersion": "46.21.0", "os": rng.choice(("darwin", "linux", "windows"))}
        )
        if rng.random() < 0.03:
            q.initiator.type = constants.InitiatorType.AI_AGENT
            q.initiator.ai_agent = "claude-code"
            q.initiator.version = "1.0.0"
        else:
            q.initiator.type = constants.InitiatorType.HUMAN
            q.initiator.trusted = True
        payload = q.SerializeToString()
        # hostile mode may have replaced the statement: report only what is really served
        return Body(category, payload, tuple(s for s in secrets if s.encode() in payload), session)

    def _take(self, body: Body, query_id: str) -> bytes:
        """The body for one new query: encrypted or not, its replay entered, its secrets planted."""
        payload, secrets, encrypted = body.payload, body.secrets, None
        encryption = self._encryption
        if encryption is not None and self._rng.random() < encryption.fraction:
            payload, encrypted = self._encrypt(body, encryption)
            secrets = tuple(s for s in secrets if s in encrypted.plaintext)
            with self._lock:
                self._encrypted[query_id] = encrypted
        if secrets:
            self.planter.plant(secrets)
        if body.session is not None:
            self.book.register(query_id, body.session, encrypted)
        return payload

    def _encrypt(self, body: Body, encryption: QueryEncryption) -> tuple[bytes, EncryptedQuery]:
        q = queries_pb2.Query.FromString(body.payload)
        if body.category in CAPTURE_CATEGORIES:
            plaintext = json.dumps(MessageToDict(q.capture), separators=(",", ":"), ensure_ascii=False)
        else:
            plaintext = q.query_body
        aes_key, query_key = encryption.encryptor.new_query_key()
        q.ClearField("capture")
        q.replayable = False  # only the decrypted capture tells
        q.encrypted = True
        q.query_key_id = encryption.key_id
        q.query_key = query_key
        q.query_body = encryption.encryptor.encrypt_body(aes_key, plaintext)
        return q.SerializeToString(), EncryptedQuery(aes_key, query_key, plaintext)

    # --- records -----------------------------------------------------------------------

    def _quantize(self, ns: int) -> int:
        return ns - ns % self._quantum if self._quantum > 1 else ns

    def _short_duration(self, category: str) -> int:
        seconds = (
            self._rng.lognormvariate(-4.0, 1.5) if category == Q.DATASOURCES else self._rng.uniform(0.1, 20)
        )
        return max(self._quantum, self._quantize(int(seconds * NANOS)))

    def _row(self, query_id: str, start_ns: int, end_ns: int | None, body: bytes, records: int) -> Row:
        if end_ns is None:
            header = self._start
            header.id = query_id
            header.timestamp.seconds, header.timestamp.nanos = divmod(start_ns, NANOS)
            return Row(header.SerializeToString() + body, f"{query_id}:start", start_ns, 0)
        header = self._full
        header.id = query_id
        header.timestamp.seconds, header.timestamp.nanos = divmod(start_ns, NANOS)
        header.completed_at.seconds, header.completed_at.nanos = divmod(end_ns, NANOS)
        header.duration.seconds, header.duration.nanos = divmod(end_ns - start_ns, NANOS)
        header.record_count = records
        return Row(header.SerializeToString() + body, query_id, start_ns, end_ns)

    def short(self, anchor_ns: int, anchor_is_completion: bool, now_ns: int) -> Row:
        """One completed query whose filter time (start or completion) is ``anchor_ns``."""
        body = self._rng.choice(self._bodies)
        duration = self._short_duration(body.category)
        if anchor_is_completion:
            start, end = anchor_ns - duration, anchor_ns
        else:
            start, end = anchor_ns, max(anchor_ns, min(anchor_ns + duration, now_ns))
        records = self._rng.randrange(5000) if body.category == Q.DATASOURCES else 0
        query_id = self._vocab.mint.new("s-")
        return self._row(query_id, start, end, self._take(body, query_id), records)

    def long_pair(self, anchor_ns: int, anchor_is_completion: bool, now_ns: int) -> list[Row]:
        """A finished long session: start and completion records (one record if too recent)."""
        duration = self._quantize(int(self._rng.uniform(120, 6 * 3600) * NANOS))
        if anchor_is_completion:
            start, end = anchor_ns - duration, anchor_ns
        else:
            start, end = anchor_ns, min(anchor_ns + duration, now_ns - NANOS)
            if end <= start:
                return [self.short(anchor_ns, anchor_is_completion, now_ns)]
        query_id = self._vocab.mint.new("s-")
        payload = self._take(self._rng.choice(self._long_bodies), query_id)
        return [self._row(query_id, start, None, payload, 0), self._row(query_id, start, end, payload, 0)]

    def open_session(self, start_ns: int) -> tuple[OpenSession, Row]:
        query_id = self._vocab.mint.new("s-")
        payload = self._take(self._rng.choice(self._long_bodies), query_id)
        session = OpenSession(query_id, start_ns, payload)
        return session, self._row(session.id, start_ns, None, payload, 0)

    def completion(self, session: OpenSession, end_ns: int) -> Row:
        return self._row(session.id, session.start_ns, max(end_ns, session.start_ns), session.body, 0)
