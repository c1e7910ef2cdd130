"""The seeded cast of one emulated organization: people, resources, nodes, roles...

Every generator draws from the same vocabulary, so the data hangs together like a real
org's: the actor of an activity is a user in ``accounts_history``, a query runs against a
resource that ``resources_history`` knows, and so on. IDs use StrongDM's prefixes
(``a-`` accounts, ``rs-`` resources, ``r-`` roles, ``n-`` nodes, ``s-`` queries...)
followed by 16 hex digits, unique by construction (a bijective scramble of a counter).
"""

from __future__ import annotations

import random
import zlib
from collections import Counter
from dataclasses import dataclass, field

from strongdm import constants

from auditstream.emulator.data.hostile import maybe_hostile

MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # odd, so multiplying by it permutes 64-bit integers

FIRST_NAMES = (
    "Alice", "Bob", "Carmen", "Dmitri", "Eve", "Farah", "Gustavo", "Hana", "Ivan", "Jia",
    "Kofi", "Lena", "Mateo", "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tariq",
    "Uma", "Viktor", "Wen", "Ximena", "Yusuf", "Zoe", "Björn", "Chloé", "Søren", "Zoë",
)  # fmt: skip
LAST_NAMES = (
    "Anderson", "Brown", "Chen", "Dubois", "Estrada", "Fischer", "García", "Haddad", "Ito",
    "Jensen", "Kowalski", "Lopez", "Müller", "Nakamura", "Okafor", "Patel", "Quispe", "Rossi",
    "Schmidt", "Tanaka", "Ueda", "Varga", "Walker", "Xu", "Yilmaz", "Zhang", "O'Brien",
)  # fmt: skip
DOMAINS = ("acme.example", "corp.acme.example")
USER_AGENTS = (
    "sdm/46.21.0 (darwin; arm64)",
    "sdm/46.18.1 (linux; amd64)",
    "sdm/45.66.0 (windows; amd64)",
    "strongdm-sdk-python/18.4.0",
    "strongdm-sdk-go/15.2.0",
    "terraform-provider-sdm/14.1.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
)
SERVICE_NAMES = ("ci-deployer", "backup-runner", "etl-nightly", "siem-exporter", "terraform-cloud", "argo-cd")
TEAMS = ("platform", "data", "payments", "security", "sre", "support", "analytics")
ENVS = ("prod", "staging", "dev")
REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-2")

# (oneof member of v1.Resource, query category, default port, name stem)
RESOURCE_KINDS: tuple[tuple[str, str, int, str], ...] = (
    ("postgres", constants.QueryCategory.DATASOURCES, 5432, "pg"),
    ("aurora_postgres", constants.QueryCategory.DATASOURCES, 5432, "aurora-pg"),
    ("mysql", constants.QueryCategory.DATASOURCES, 3306, "mysql"),
    ("sql_server", constants.QueryCategory.DATASOURCES, 1433, "mssql"),
    ("redis", constants.QueryCategory.DATASOURCES, 6379, "redis"),
    ("mongo_host", constants.QueryCategory.DATASOURCES, 27017, "mongo"),
    ("snowflake", constants.QueryCategory.DATASOURCES, 443, "snowflake"),
    ("ssh", constants.QueryCategory.SSH, 22, "bastion"),
    ("ssh_cert", constants.QueryCategory.SSH, 22, "web"),
    ("kubernetes", constants.QueryCategory.KUBERNETES, 443, "k8s"),
    ("amazon_eks", constants.QueryCategory.KUBERNETES, 443, "eks"),
    ("rdp", constants.QueryCategory.RDP, 3389, "win"),
    ("http_basic_auth", constants.QueryCategory.WEB, 443, "grafana"),
    ("aws_console", constants.QueryCategory.CLOUD, 443, "aws-console"),
    ("oracle", constants.QueryCategory.DATASOURCES, 1521, "oracle"),
)


class IdMint:
    """Unique, random-looking StrongDM-style IDs, reproducible from the seed."""

    def __init__(self, seed: int) -> None:
        self._key = (seed * _GOLDEN) & MASK64
        self._counters: Counter[str] = Counter()
        self._salts: dict[str, int] = {}

    def new(self, prefix: str) -> str:
        n = self._counters[prefix] = self._counters[prefix] + 1
        salt = self._salts.get(prefix)
        if salt is None:  # per prefix, so the n-th "a-" and the n-th "rs-" id do not look alike
            salt = self._salts[prefix] = (zlib.crc32(prefix.encode()) * _GOLDEN) & MASK64
        return f"{prefix}{((n * _GOLDEN) & MASK64) ^ self._key ^ salt:016x}"


@dataclass(frozen=True)
class Person:
    id: str
    email: str
    first_name: str
    last_name: str
    external_id: str
    team: str

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}"


@dataclass(frozen=True)
class Named:
    """Any entity the vocabulary only needs an id and a name for."""

    id: str
    name: str
    kind: str = ""


@dataclass(frozen=True)
class ResourceInfo:
    id: str
    name: str
    kind: str  # v1.Resource oneof member
    category: str  # constants.QueryCategory
    hostname: str
    port: int
    env: str
    team: str


@dataclass
class Vocabulary:
    rng: random.Random
    hostile: bool
    mint: IdMint
    people: list[Person] = field(default_factory=list)
    services: list[Named] = field(default_factory=list)
    tokens: list[Named] = field(default_factory=list)
    resources: list[ResourceInfo] = field(default_factory=list)
    nodes: list[Named] = field(default_factory=list)
    roles: list[Named] = field(default_factory=list)
    groups: list[Named] = field(default_factory=list)
    workflows: list[Named] = field(default_factory=list)
    approval_flows: list[Named] = field(default_factory=list)
    secret_stores: list[Named] = field(default_factory=list)
    identity_sets: list[Named] = field(default_factory=list)
    remote_identity_groups: list[Named] = field(default_factory=list)
    policies: list[Named] = field(default_factory=list)
    secret_engines: list[Named] = field(default_factory=list)  # ManagedSecrets' engines
    managed_secrets: list[Named] = field(default_factory=list)  # kind: the engine's id
    ips: list[str] = field(default_factory=list)
    org_id: str = ""
    org_name: str = "Acme Corp"
    _categories: dict[str, list[ResourceInfo]] | None = None

    def text(self, value: str, rate: float = 0.25) -> str:
        """``value``, made hostile now and then in hostile mode."""
        return maybe_hostile(self.rng, value, self.hostile, rate)

    def resources_in(self, category: str) -> list[ResourceInfo]:
        return self._by_category().get(category, [])

    def _by_category(self) -> dict[str, list[ResourceInfo]]:
        if self._categories is None:
            self._categories = {}
            for resource in self.resources:
                self._categories.setdefault(resource.category, []).append(resource)
        return self._categories


def build_vocabulary(seed: int, hostile: bool) -> Vocabulary:
    rng = random.Random(f"vocabulary:{seed}")
    mint = IdMint(seed)
    v = Vocabulary(rng=rng, hostile=hostile, mint=mint)
    seen_emails: set[str] = set()
    while len(v.people) < 60:
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        local = f"{first}.{last}".lower().replace("'", "")
        email = f"{local}@{rng.choice(DOMAINS)}"
        if email in seen_emails:
            email = f"{local}{len(v.people)}@{DOMAINS[0]}"
        seen_emails.add(email)
        v.people.append(
            Person(
                id=mint.new("a-"),
                email=v.text(email, 0.1),
                first_name=v.text(first, 0.15),
                last_name=v.text(last, 0.15),
                external_id=f"00u{rng.getrandbits(64):016x}"[:20],
                team=rng.choice(TEAMS),
            )
        )
    v.services = [Named(mint.new("a-"), v.text(name, 0.2), "service") for name in SERVICE_NAMES]
    v.tokens = [Named(mint.new("a-"), f"{team}-admin-token", "token") for team in TEAMS[:4]]
    for kind, category, port, stem in RESOURCE_KINDS:
        for env in ENVS:
            for n in range(1, 3):
                name = f"{stem}-{env}-{n:02d}"
                v.resources.append(
                    ResourceInfo(
                        id=mint.new("rs-"),
                        name=v.text(name, 0.1),
                        kind=kind,
                        category=category,
                        hostname=f"{stem}-{n:02d}.{env}.{rng.choice(REGIONS)}.internal.acme.example",
                        port=port,
                        env=env,
                        team=rng.choice(TEAMS),
                    )
                )
    v.nodes = [
        Named(mint.new("n-"), f"{kind}-{region}-{i}", kind)
        for kind in ("relay", "gateway", "proxy_cluster")
        for region in REGIONS[:3]
        for i in (1, 2)
    ]
    v.roles = [Named(mint.new("r-"), v.text(f"{team}-{env}", 0.1)) for team in TEAMS for env in ENVS]
    v.groups = [Named(mint.new("group-"), v.text(f"{team}-engineers", 0.1)) for team in TEAMS]
    v.workflows = [Named(mint.new("aw-"), f"{team} break-glass") for team in TEAMS]
    v.approval_flows = [Named(mint.new("af-"), f"{team} approval") for team in TEAMS]
    v.secret_stores = [
        Named(mint.new("se-"), name, kind)
        for name, kind in (
            ("vault-prod", "vault_token"),
            ("vault-approle", "vault_app_role"),
            ("aws-secrets-manager", "aws"),
            ("azure-key-vault", "azure"),
            ("gcp-secret-manager", "gcp"),
            ("conjur", "cyberark_conjur"),
        )
    ]
    v.identity_sets = [Named(mint.new("ig-"), name) for name in ("default", "prod-linux", "windows-ad")]
    v.remote_identity_groups = [Named(mint.new("rig-"), name) for name in ("default", "k8s-readers")]
    v.policies = [
        Named(mint.new("po-"), name)
        for name in ("forbid-prod-deletes", "require-mfa-for-admin", "permit-readonly-analytics")
    ]
    v.ips = (
        [f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}" for _ in range(40)]
        + [f"203.0.113.{rng.randrange(1, 255)}" for _ in range(10)]
        + [f"198.51.100.{rng.randrange(1, 255)}" for _ in range(10)]
        + [f"2001:db8:{rng.randrange(65536):x}::{rng.randrange(1, 65536):x}" for _ in range(10)]
    )
    v.org_id = mint.new("o-")
    v.secret_engines = [
        Named(mint.new("se-"), name, kind)
        for name, kind in (("ad-engine", "active_directory"), ("kv-engine", "key_value"))
    ]
    v.managed_secrets = [
        Named(mint.new("ms-"), f"{rng.choice(TEAMS)}-{stem}-{n}", rng.choice(v.secret_engines).id)
        for n, stem in enumerate(("db-password", "svc-account", "api-token", "ad-user", "ssh-key") * 4)
    ]
    return v
