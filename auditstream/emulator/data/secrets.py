"""Statements and commands that carry a secret, one of every family a masker must handle.

A query log is where credentials leak: people type ``CREATE USER ... IDENTIFIED BY`` into a
SQL console, paste ``PGPASSWORD=... psql`` into a shell, ``kubectl create secret`` from a
laptop. With ``secret_fraction`` > 0 the emulator plants such statements, each with a fresh
random value, and remembers every value it planted (``Emulator.planted_secrets()``) so a
test can search whatever the daemon wrote for each of them, in clear and in base64.

Values are long (80+ bits from the seeded generator), so finding one by chance elsewhere
is impossible, and drawn from alphabets that survive where they are embedded unescaped:
JSON (the plaintext of an encrypted capture), URL query strings (a Kubernetes exec URI)
and shell words. A value is only reported once it is in something served
(:meth:`SecretPlanter.plant`), never for a pooled body no record used.
"""

from __future__ import annotations

import base64
import json
import random
import shlex
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from typing import NamedTuple

ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
SQL_PUNCT = "!#%^*-_+=.?~"  # none needs escaping inside '...' in any SQL dialect, nor in JSON
URL_SAFE = "-_."  # unreserved in URLs: a password in a connection URL stays as typed
AWS_KEY_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
B64_CHARS = ALNUM + "+/"
RSA_PEM_PREFIX = "MIIEpAIBAAKCAQEA"  # what every 2048-bit PKCS#1 key's first line starts with


class Planted(NamedTuple):
    """A statement or command, and the secret values in it."""

    text: str
    secrets: tuple[str, ...]


def password(rng: random.Random, extra: str = "", low: int = 16, high: int = 24) -> str:
    """A random password starting with a letter (so it never looks like a flag or a number)."""
    n = rng.randint(low, high)
    first = rng.choice(ALNUM[:52])
    return first + "".join(rng.choice(ALNUM + extra) for _ in range(n - 1))


def jwt(rng: random.Random) -> str:
    def b64url(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    iat = rng.randrange(1_700_000_000, 1_800_000_000)
    claims = {"sub": f"svc-{rng.getrandbits(32):08x}", "iat": iat, "exp": iat + 3600}
    claims["jti"] = f"{rng.getrandbits(64):016x}"
    payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
    return f"{header}.{payload}.{b64url(rng.randbytes(32))}"


def aws_secret_access_key(rng: random.Random) -> str:
    # Real ones also use "/" and "+"; alphanumerics keep the value verbatim in a URL-encoded
    # exec URI, and match the same 40-character detectors.
    return "".join(rng.choice(ALNUM) for _ in range(40))


def aws_access_key_id(rng: random.Random) -> str:
    return "AKIA" + "".join(rng.choice(AWS_KEY_ID_CHARS) for _ in range(16))


def pem_private_key_lines(rng: random.Random) -> list[str]:
    """Base64 lines of a (random, not mathematically valid) PKCS#1 RSA key, 64 per line."""
    lines = [RSA_PEM_PREFIX + "".join(rng.choice(B64_CHARS) for _ in range(64 - len(RSA_PEM_PREFIX)))]
    lines += ["".join(rng.choice(B64_CHARS) for _ in range(64)) for _ in range(23)]
    lines.append("".join(rng.choice(B64_CHARS) for _ in range(rng.randint(40, 60))) + "==")
    return lines


PEM_BEGIN = "-----BEGIN RSA PRIVATE KEY-----"
PEM_END = "-----END RSA PRIVATE KEY-----"


# --- SQL and datasource statements, by resource kind -----------------------------------


def _mysql(rng: random.Random) -> Planted:
    pw = password(rng, SQL_PUNCT)
    user = rng.choice(("app_ro", "reporting", "etl", "svc_billing"))
    text = rng.choice(
        (
            f"CREATE USER '{user}'@'%' IDENTIFIED BY '{pw}';",
            f"ALTER USER '{user}'@'10.%' IDENTIFIED BY '{pw}';",
            f"SET PASSWORD = '{pw}';",
            f"CHANGE REPLICATION SOURCE TO SOURCE_HOST='mysql-primary.prod', SOURCE_USER='repl', "
            f"SOURCE_PASSWORD='{pw}', SOURCE_AUTO_POSITION=1;",
        )
    )
    return Planted(text, (pw,))


def _postgres(rng: random.Random) -> Planted:
    choice = rng.randrange(4)
    if choice == 0:
        pw = password(rng, SQL_PUNCT)
        role = rng.choice(("reporting", "grafana", "etl_loader"))
        return Planted(f"CREATE ROLE {role} LOGIN PASSWORD '{pw}' VALID UNTIL '2026-01-01';", (pw,))
    if choice == 1:
        pw = password(rng, SQL_PUNCT)
        return Planted(
            f"CREATE USER MAPPING FOR app SERVER legacy_billing OPTIONS (user 'etl', password '{pw}');", (pw,)
        )
    if choice == 2:
        pw = password(rng, URL_SAFE)
        return Planted(
            f"SELECT * FROM dblink('host=10.0.3.7 dbname=billing user=etl password={pw}', "
            f"'SELECT id, total FROM invoices') AS t(id int, total numeric);",
            (pw,),
        )
    pw = password(rng, URL_SAFE)
    return Planted(f"SELECT dblink_connect('legacy', 'postgres://svc:{pw}@db/prod');", (pw,))


def _sql_server(rng: random.Random) -> Planted:
    pw = password(rng, SQL_PUNCT)
    login = rng.choice(("etl", "reporting", "sa"))
    verb = rng.choice(("CREATE", "ALTER"))
    return Planted(f"{verb} LOGIN {login} WITH PASSWORD = '{pw}', CHECK_POLICY = ON;", (pw,))


def _oracle(rng: random.Random) -> Planted:
    pw = password(rng, "_")  # unquoted: an Oracle identifier
    user = rng.choice(("app_owner", "reporting", "batch"))
    verb = rng.choice(("CREATE", "ALTER"))
    return Planted(f"{verb} USER {user} IDENTIFIED BY {pw}", (pw,))


def _redis(rng: random.Random) -> Planted:
    pw = password(rng, low=24, high=32)
    return Planted(rng.choice((f"AUTH {pw}", f"AUTH default {pw}")), (pw,))


def _mongo(rng: random.Random) -> Planted:
    pw = password(rng, "-_.!")
    user = rng.choice(("reporting", "backup", "app"))
    roles = '[{role: "read", db: "app"}]'
    return Planted(f'db.createUser({{user: "{user}", pwd: "{pw}", roles: {roles}}})', (pw,))


def _snowflake(rng: random.Random) -> Planted:
    pw = password(rng, SQL_PUNCT)
    return Planted(f"ALTER USER svc_loader SET PASSWORD = '{pw}' MUST_CHANGE_PASSWORD = FALSE;", (pw,))


SQL_FAMILIES: dict[str, Callable[[random.Random], Planted]] = {
    "mysql": _mysql,
    "postgres": _postgres,
    "aurora_postgres": _postgres,
    "sql_server": _sql_server,
    "oracle": _oracle,
    "redis": _redis,
    "mongo_host": _mongo,
    "snowflake": _snowflake,
}


def datasource_statement(rng: random.Random, resource_kind: str) -> Planted:
    """A secret-bearing statement in the dialect of ``resource_kind`` (SQL by default)."""
    return SQL_FAMILIES.get(resource_kind, _postgres)(rng)


# --- shell commands (SSH, replays, kubectl exec) ---------------------------------------


def shell_command(rng: random.Random) -> Planted:
    """A command line with a credential on it, as people really type them."""
    choice = rng.randrange(9)
    if choice == 0:
        pw = password(rng, URL_SAFE)
        return Planted(f"mysql -uroot -p{pw} -h mysql-01.prod -e 'SHOW DATABASES'", (pw,))
    if choice == 1:
        pw = password(rng, URL_SAFE)
        psql = "psql -h pg-01.prod -U app -d prod -c 'select count(*) from users'"
        return Planted(f"PGPASSWORD={pw} {psql}", (pw,))
    if choice == 2:
        pw = password(rng, URL_SAFE)
        return Planted(f"psql postgres://svc:{pw}@db/prod -c 'select 1'", (pw,))
    if choice == 3:
        pw = password(rng, URL_SAFE)
        return Planted(f"sshpass -p {pw} ssh -o StrictHostKeyChecking=no deploy@10.0.3.7 uptime", (pw,))
    if choice == 4:
        token = jwt(rng)
        return Planted(
            f"curl -s -H 'Authorization: Bearer {token}' https://api.internal.acme.example/v1/users?limit=5",
            (token,),
        )
    if choice == 5:
        key = aws_secret_access_key(rng)
        return Planted(f"export AWS_SECRET_ACCESS_KEY={key}", (key,))
    if choice == 6:
        key_id = aws_access_key_id(rng)
        return Planted(f"export AWS_ACCESS_KEY_ID={key_id}", (key_id,))
    if choice == 7:
        pw = password(rng, URL_SAFE)
        url = f"mongodb://admin:{pw}@mongo-01.prod:27017/admin"
        return Planted(f'mongosh "{url}" --quiet --eval "db.stats()"', (pw,))
    pw = password(rng, low=24, high=32)
    return Planted(f"redis-cli -h redis-01.prod -a {pw} --no-auth-warning INFO keyspace", (pw,))


class KubectlSecret(NamedTuple):
    """A kubectl command with a credential, and what the API server saw of it."""

    planted: Planted
    exec_argv: tuple[str, ...]  # the command run in the pod, empty for ``create secret``
    secret_name: str
    literals: tuple[tuple[str, str], ...]  # ``create secret`` key/value pairs


def kubectl_command(rng: random.Random, pod: str, namespace: str) -> KubectlSecret:
    choice = rng.randrange(3)
    if choice == 0:
        pw = password(rng, URL_SAFE)
        name = rng.choice(("db-creds", "billing-db", "etl-credentials"))
        literals: tuple[tuple[str, str], ...] = (("username", "app"), ("password", pw))
        text = f"kubectl create secret generic {name} -n {namespace} " + " ".join(
            f"--from-literal={k}={v}" for k, v in literals
        )
        return KubectlSecret(Planted(text, (pw,)), (), name, literals)
    if choice == 1:
        pw = password(rng, URL_SAFE)
        literals = ((".dockerconfigjson-password", pw),)
        text = (
            f"kubectl create secret docker-registry regcred -n {namespace} --docker-server=ghcr.io "
            f"--docker-username=ci-bot --docker-password={pw}"
        )
        return KubectlSecret(Planted(text, (pw,)), (), "regcred", literals)
    inner = shell_command(rng)
    text = f"kubectl exec -n {namespace} {pod} -- sh -c {shlex.quote(inner.text)}"
    return KubectlSecret(Planted(text, inner.secrets), ("sh", "-c", inner.text), "", ())


def exec_request_uri(pod_path: str, argv: Iterable[str], container: str, tty: bool) -> str:
    """The URI ``kubectl exec`` POSTs: each argument is a URL-encoded ``command=`` parameter."""
    params = [("command", arg) for arg in argv]
    params += [("container", container), ("stdin", "true"), ("stdout", "true"), ("stderr", "true")]
    if tty:
        params.append(("tty", "true"))
    return f"{pod_path}/exec?{urllib.parse.urlencode(params, quote_via=urllib.parse.quote)}"


def secret_request_body(namespace: str, name: str, literals: Iterable[tuple[str, str]]) -> bytes:
    """The v1 Secret ``kubectl create secret`` sends: values base64-encoded under ``data``."""
    data = {key: base64.b64encode(value.encode()).decode() for key, value in literals}
    body = {
        "kind": "Secret",
        "apiVersion": "v1",
        "metadata": {"name": name, "namespace": namespace},
        "data": data,
        "type": "Opaque",
    }
    return json.dumps(body, separators=(",", ":")).encode()


class SecretPlanter:
    """Decides which statements carry a secret, and remembers every value served.

    ``plant`` is called when a record is built from a statement, so the set only ever
    holds values a client can be served. It is read from other threads (tests), hence
    the lock.
    """

    def __init__(self, fraction: float, rng: random.Random) -> None:
        self.fraction = fraction
        self._rng = rng
        self._planted: set[str] = set()
        self._lock = threading.Lock()

    def draw(self, rng: random.Random | None = None) -> bool:
        """Whether the next statement carries a secret (no draw at all when off)."""
        if self.fraction <= 0:
            return False
        return (rng or self._rng).random() < self.fraction

    def plant(self, secrets: Iterable[str]) -> None:
        with self._lock:
            self._planted.update(secrets)

    def planted(self) -> set[str]:
        with self._lock:
            return set(self._planted)
