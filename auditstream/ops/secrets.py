"""The one scrubber: which strings are secrets, in every form they could leak in, and
replacing them in everything the daemon prints, serves or writes.

Every output goes through :func:`redact` (text) or :func:`scrub` (structured values): log
lines, ``/metrics`` label values, the ``/readyz`` body, ``auditstream check`` lines, sink
health errors, dead-letter reasons, receivers' answers quoted in errors, the systemd status
line. Code must still never print a secret; this catches what nobody thought of, such as a
receiver that quotes the request's ``Authorization`` header in its error body.

One process-wide registry (:func:`register_secrets`, fed from the configuration by
:func:`config_secrets` at start-up) plus, where a component knows its own credentials (a
sink), a local :class:`Secrets` passed as ``also``, so that a sink used without a daemon
around it (a test, a script) is safe too. Credentials the daemon is handed while it runs and
that expire (an Entra ID bearer token, renewed hourly) are registered with
:func:`register_expiring`: the newest two of each are scrubbed, older ones let go, so the
registry stays as small as the configuration made it.

A value shorter than :data:`MIN_SECRET_LENGTH` cannot be scrubbed without mangling ordinary
words, so it would show in output as it is: registering the configuration warns about each
such value, naming its key (never the value), so that a four-letter password does not go
unnoticed.

Each registered value is expanded into the forms it takes on the way out (:func:`forms`):
itself, its base64 (standard, URL-safe, with and without padding), what it decodes to if
it is base64 (the StrongDM secret key is), and those as a JSON string or a URL would carry
them. HTTP Basic credentials are registered as the ``user:password`` pair, so the header
value ``Basic base64(user:password)`` is covered; ``Bearer <token>`` and ``Splunk <token>``
are covered by the token itself.

Every configured secret is a pydantic ``SecretStr`` (the API secret key, sink tokens and
passwords, the redaction hash key, TLS key passwords, proxy passwords), so finding them needs
no list that could fall behind the schema. The one secret that is not in the configuration
file but is configuration all the same is a password in a proxy variable of the environment
(``HTTPS_PROXY=http://user:password@proxy:3128``, which the HTTP sinks and gRPC both read):
:func:`config_secrets` includes it.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import quote, quote_plus, unquote, urlsplit

import structlog
from pydantic import BaseModel, SecretStr

log = structlog.get_logger("auditstream.secrets")

REDACTED = "[redacted]"
MIN_SECRET_LENGTH = 6
"""Shorter values cannot be scrubbed without mangling ordinary words; don't use such secrets."""
EXPIRING_KEPT = 2
"""Values of one expiring credential scrubbed at once: the current one and the one before,
which a request sent just before the renewal may still carry into an error."""
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


# -- which strings ------------------------------------------------------------------------


def _models(node: Any, path: str = "") -> Iterator[tuple[str, BaseModel]]:
    """(key path, model) of every model under ``node``; a list item that has a ``name`` (a
    sink) is named by it, as the operator knows it: ``sinks[splunk]``."""
    if isinstance(node, BaseModel):
        yield path, node
        for name, value in node:
            yield from _models(value, f"{path}.{name}" if path else name)
    elif isinstance(node, list | tuple):
        for index, item in enumerate(node):
            label = getattr(item, "name", None)
            yield from _models(item, f"{path}[{label if isinstance(label, str) else index}]")
    elif isinstance(node, dict):
        for name, value in node.items():
            yield from _models(value, f"{path}.{name}")


def _key(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _basic_credentials(node: Any) -> Iterator[tuple[str, str]]:
    """(key, ``user:password``) of every model with ``<prefix>username`` and
    ``<prefix>password`` (HTTP Basic auth; ``proxy_username`` + ``proxy_password``): the
    header value is ``Basic base64(user:password)``, which only the pair's forms cover."""
    for path, model in _models(node):
        for name, value in model:
            if not isinstance(value, SecretStr) or not name.endswith("password"):
                continue
            prefix = name.removesuffix("password")
            username = getattr(model, f"{prefix}username", None)
            if isinstance(username, str):
                yield _key(path, f"{prefix}username:{name}"), f"{username}:{value.get_secret_value()}"


def environment_secrets(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The password (and ``user:password``) of each proxy variable that carries credentials,
    by the variable's name: a proxy URL is quoted by proxies and clients in their errors."""
    found: dict[str, str] = {}
    env = os.environ if environ is None else environ
    for variable in PROXY_VARIABLES:
        value = env.get(variable)
        if not value:
            continue
        try:
            parts = urlsplit(value if "://" in value else f"http://{value}")
            username, password = parts.username, parts.password
        except ValueError:
            continue
        if password:
            found[unquote(password)] = f"{variable} (its password)"
            found[f"{unquote(username or '')}:{unquote(password)}"] = f"{variable} (user:password)"
    return found


def config_secrets(config: BaseModel) -> dict[str, str]:
    """Every secret of ``config`` (a whole configuration or one sink's settings), plus the
    ``user:password`` pair of each Basic credential and the credentials of the environment's
    proxy variables, each mapped to the key it was configured under (for the warning about
    values too short to scrub); :func:`forms` expands them."""
    found = environment_secrets()
    for path, model in _models(config):
        for name, value in model:
            if isinstance(value, SecretStr) and value.get_secret_value():
                found[value.get_secret_value()] = _key(path, name)
    for key, pair in _basic_credentials(config):
        found[pair] = key
    return found


def _decoded(value: str) -> str | None:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _carried(text: str) -> set[str]:
    """``text`` as a JSON string's content (with and without ASCII escapes, with ``\\/``)
    and as a URL component: how a receiver that quotes it back would write it."""
    found = {text, json.dumps(text, ensure_ascii=False)[1:-1], json.dumps(text)[1:-1]}
    found |= {f.replace("/", "\\/") for f in found}
    found |= {quote(text, safe=""), quote_plus(text, safe="")}
    return found


def forms(secret: str) -> set[str]:
    """Every form of ``secret`` that is long enough to scrub safely (see the module docstring)."""
    encoded = secret.encode()
    plain = {secret, base64.b64encode(encoded).decode(), base64.urlsafe_b64encode(encoded).decode()}
    plain |= {p.rstrip("=") for p in plain}
    decoded = _decoded(secret)
    if decoded:
        plain.add(decoded)
    found: set[str] = set()
    for text in plain:
        found |= _carried(text)
    return {f for f in found if len(f) >= MIN_SECRET_LENGTH}


# -- replacing them -----------------------------------------------------------------------


class Secrets:
    """A set of secrets in all their :func:`forms`, longest first."""

    __slots__ = ("_expiring", "_fixed", "forms")

    def __init__(self, values: Iterable[str] = ()) -> None:
        self.forms: tuple[str, ...] = ()
        self._fixed: set[str] = set()
        self._expiring: dict[str, list[tuple[str, set[str]]]] = {}  # slot -> newest last
        self.add(values)

    def add(self, values: Iterable[str]) -> None:
        """Add secrets (idempotent); the tuple is replaced whole, so readers never see half."""
        for value in values:
            self._fixed |= forms(value)
        self._rebuild()

    def replace(self, slot: str, value: str) -> None:
        """``value`` is the newest of a credential that is renewed as it expires (``slot``
        names it): it and the value before it are scrubbed, older ones no longer."""
        values = self._expiring.setdefault(slot, [])
        if any(known == value for known, _ in values):
            return
        values.append((value, forms(value)))
        del values[:-EXPIRING_KEPT]
        self._rebuild()

    def _rebuild(self) -> None:
        known = set(self._fixed)
        for values in self._expiring.values():
            for _, found in values:
                known |= found
        self.forms = tuple(sorted(known, key=lambda s: (-len(s), s)))

    def __bool__(self) -> bool:
        return bool(self.forms)


_REGISTRY = Secrets()


def register_secrets(values: Iterable[str] | Mapping[str, str]) -> None:
    """Add strings (and their forms) that must never appear in any output.

    Given a mapping of each secret to the key it was configured under (what
    :func:`config_secrets` returns), a value too short to be scrubbed is named in a warning
    (by its key: the value is the thing that must not be printed)."""
    if isinstance(values, Mapping):
        for value, key in sorted(values.items(), key=lambda item: item[1]):
            if len(value) < MIN_SECRET_LENGTH:
                log.warning(
                    f"the secret in {key} has {len(value)} characters, fewer than {MIN_SECRET_LENGTH}: "
                    "it cannot be scrubbed from logs, /metrics, /readyz, check output and dead letters "
                    "without mangling ordinary words, so it would show there as it is; use a longer one",
                    key=key,
                    length=len(value),
                    minimum=MIN_SECRET_LENGTH,
                )
    _REGISTRY.add(values)


def register_expiring(slot: str, value: str) -> None:
    """Register the newest value of a credential that expires and is renewed (a bearer token
    from Entra ID): scrubbed everywhere, like a configured secret, until two newer values of
    the same ``slot`` have replaced it."""
    _REGISTRY.replace(slot, value)


def active(also: Secrets | None = None) -> bool:
    """Whether anything is registered (lets hot paths skip scrubbing)."""
    return bool(_REGISTRY) or bool(also)


def _replace(text: str, secrets: tuple[str, ...]) -> str:
    """Every occurrence of every secret replaced; overlapping occurrences are replaced as one
    span, so no piece of one survives next to another."""
    spans: list[tuple[int, int]] = []
    for secret in secrets:
        start = text.find(secret)
        while start != -1:
            spans.append((start, start + len(secret)))
            start = text.find(secret, start + 1)
    if not spans:
        return text
    spans.sort()
    out: list[str] = []
    position = 0
    end = -1
    for start, stop in spans:
        if start > end:  # a new span: flush the text since the previous one
            if end >= 0:
                out.append(REDACTED)
            out.append(text[position:start])
            end = stop
        else:
            end = max(end, stop)
        position = end
    out.append(REDACTED)
    out.append(text[position:])
    return "".join(out)


def redact(text: str, also: Secrets | None = None) -> str:
    """``text`` with every registered secret (and those of ``also``) replaced by ``[redacted]``."""
    secrets = _REGISTRY.forms + also.forms if also else _REGISTRY.forms
    return _replace(text, secrets) if secrets else text


def scrub(value: Any, also: Secrets | None = None) -> Any:
    """:func:`redact` applied to every string inside ``value`` (dicts, lists, bytes, objects
    as their ``str``); numbers, booleans and None pass unchanged."""
    if isinstance(value, str):
        return redact(value, also)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {key: scrub(item, also) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [scrub(item, also) for item in value]
    if isinstance(value, bytes | bytearray):
        return redact(bytes(value).decode("utf-8", "backslashreplace"), also)
    return redact(str(value), also)
