"""The egress proxy of the sinks that speak HTTP through aiohttp (http, splunk_hec,
elasticsearch, datadog, azure_monitor): one rule for which proxy a request goes through, and
one way of saying what a proxy refused.

Corporate networks send SIEM traffic through a proxy. botocore (the AWS sinks) and gRPC (the
StrongDM API) honour ``HTTPS_PROXY``, ``HTTP_PROXY`` and ``NO_PROXY`` by themselves; aiohttp
does not unless asked, so without this the other sinks tried to connect directly and failed
where only the proxy may leave the network. The rule, the one curl and botocore follow:

* the sink's ``proxy`` key, when set, carries every request of the sink (``NO_PROXY`` does not
  apply: it is this sink's explicit setting);
* otherwise the environment: ``https_proxy`` / ``HTTPS_PROXY`` for an ``https://`` receiver,
  ``http_proxy`` / ``HTTP_PROXY`` for an ``http://`` one (lower case first), unless the
  receiver's host matches ``no_proxy`` / ``NO_PROXY`` (host names, domain suffixes, ``*``);
* credentials: ``proxy_username`` with ``proxy_password`` / ``proxy_password_file`` (a
  Kubernetes Secret or a systemd credential), or those in the environment's URL
  (``http://user:password@proxy:3128``). They travel in ``Proxy-Authorization`` only, both
  forms are registered with the scrubber (never in logs, ``check``, health or dead letters),
  and credentials in the ``proxy`` key's URL are refused, as URLs end up in logs.

An ``https://`` receiver is reached through a ``CONNECT`` tunnel: TLS stays end to end, and
the sink's ``[sinks.tls]`` settings verify the receiver, not the proxy. What the proxy refuses
is said as the proxy's, naming the setting to fix: 407 (credentials: ``proxy_username`` /
``proxy_password``, or the variable's), 403 and the like (the proxy's policy does not allow
the receiver: allow it, or ``NO_PROXY``) are fatal, data kept; a proxy that cannot be reached
or answers 5xx is retried.
"""

from __future__ import annotations

import base64
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote, urlsplit, urlunsplit

import structlog
from pydantic import SecretStr, field_validator, model_validator

from auditstream.sinks.base import SinkFatalError, SinkSettingsBase
from auditstream.sinks.retry import TransientError

log = structlog.get_logger("auditstream.sinks.proxy")

CREDENTIAL_KEYS = "proxy_username and proxy_password / proxy_password_file"
DEFAULT_PORTS = {"http": 80, "https": 443}


class ProxiedSinkSettings(SinkSettingsBase):
    """Keys of every sink that speaks HTTP through aiohttp: the egress proxy."""

    proxy: str | None = None
    proxy_username: str | None = None
    proxy_password: SecretStr | None = None

    @field_validator("proxy")
    @classmethod
    def _proxy_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"proxy {value!r} is not an http:// (or https://) URL, e.g. http://proxy.corp:3128"
            )
        if parts.username is not None or parts.password is not None:
            raise ValueError(
                f"put the proxy's credentials in {CREDENTIAL_KEYS}, not in its URL (URLs end up in logs)"
            )
        return value.rstrip("/")

    def credential_urls(self) -> list[str]:
        """The URLs this sink sends credentials to (a token, an API key, Basic auth)."""
        return []

    def cleartext_credential_urls(self) -> list[str]:
        """Those of :meth:`credential_urls` that are plain ``http://`` to another host than
        this one: allowed, never silently (``check`` and the start say so). Loopback stays
        on the machine, so a collector there is not said."""
        return [
            url
            for url in self.credential_urls()
            if urlsplit(url).scheme == "http" and not _is_loopback(urlsplit(url).hostname)
        ]

    @model_validator(mode="after")
    def _proxy_credentials(self) -> ProxiedSinkSettings:
        if (self.proxy_username is None) != (self.proxy_password is None):
            raise ValueError(f"{CREDENTIAL_KEYS} go together")
        return self


@dataclass(frozen=True)
class Route:
    """The proxy one request goes through: its URL without credentials, the
    ``Proxy-Authorization`` header carrying the credentials (if any), and the setting it came
    from (``proxy``, or the environment variable's name)."""

    url: str
    authorization: str | None = field(repr=False)
    source: Literal["proxy"] | str

    def describe(self) -> str:
        return f"{self.url} (from {self.source})"

    def connect_headers(self, url: str) -> dict[str, str] | None:
        """Headers of the CONNECT that tunnels to an ``https://`` ``url`` (aiohttp's
        ``proxy_headers``, which it sends only there)."""
        if not self.authorization or urlsplit(url).scheme != "https":
            return None
        return {"Proxy-Authorization": self.authorization}

    def request_headers(self, url: str) -> dict[str, str]:
        """Headers to add to a plain-http request the proxy forwards (no tunnel: the proxy
        reads them from the request itself, and removes them before forwarding)."""
        if not self.authorization or urlsplit(url).scheme == "https":
            return {}
        return {"Proxy-Authorization": self.authorization}

    def fix_credentials(self) -> str:
        """The settings that hold this route's credentials, as a refusal of them names them."""
        verb = "check" if self.authorization else "set"
        if self.source == "proxy":
            return f"{verb} {CREDENTIAL_KEYS}"
        return (
            f"{verb} {CREDENTIAL_KEYS} (or the credentials in {self.source}: http://user:password@host:port)"
        )


def basic_authorization(username: str, password: str) -> str:
    """``Basic base64(user:password)``, UTF-8 (RFC 7617). Built here: aiohttp deprecates its
    ``BasicAuth`` and ``proxy_auth`` for ``proxy_headers`` with this value."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


class ProxyResolver:
    """Which proxy, if any, a sink's request to a URL goes through (see the module docstring).

    The environment is read once, when the sink is built, like every other setting."""

    def __init__(self, settings: ProxiedSinkSettings, environ: Mapping[str, str] | None = None) -> None:
        self._settings = settings
        self._env = dict(os.environ if environ is None else environ)
        self._routes: dict[tuple[str, str], Route | None] = {}

    def _credentials(self, username: str | None, password: str | None) -> str | None:
        s = self._settings
        if s.proxy_username is not None and s.proxy_password is not None:
            return basic_authorization(s.proxy_username, s.proxy_password.get_secret_value())
        if username is not None and password is not None:
            return basic_authorization(unquote(username), unquote(password))
        return None

    def _variable(self, scheme: str) -> tuple[str, str] | None:
        for name in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY"):
            value = self._env.get(name, "").strip()
            if value:
                return name, value
        return None

    def _bypassed(self, host: str, port: int | None) -> bool:
        no_proxy = self._env.get("no_proxy") or self._env.get("NO_PROXY") or ""
        return any(no_proxy_matches(entry, host, port) for entry in no_proxy.split(","))

    def route(self, url: str) -> Route | None:
        """The proxy for a request to ``url``, or None to connect directly."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        if key in self._routes:
            return self._routes[key]
        route: Route | None = None
        if self._settings.proxy is not None:
            route = Route(self._settings.proxy, self._credentials(None, None), "proxy")
        elif (found := self._variable(parts.scheme)) is not None and not self._bypassed(
            parts.hostname or "", parts.port or DEFAULT_PORTS.get(parts.scheme)
        ):
            name, value = found
            proxy = urlsplit(value if "://" in value else f"http://{value}")
            host = proxy.hostname or ""
            netloc = f"[{host}]" if ":" in host else host
            if proxy.port is not None:
                netloc += f":{proxy.port}"
            bare = urlunsplit((proxy.scheme, netloc, proxy.path.rstrip("/"), "", ""))
            route = Route(bare, self._credentials(proxy.username, proxy.password), name)
        self._routes[key] = route
        if route is not None:
            log.info(
                "sending through an egress proxy",
                sink=self._settings.name,
                receiver=parts.netloc,
                proxy=route.url,
                source=route.source,
            )
        return route


def no_proxy_matches(entry: str, host: str, port: int | None) -> bool:
    """Whether one ``NO_PROXY`` entry names ``host`` (and ``port``): ``*`` names every host;
    ``example.com`` and ``.example.com`` name it and every host under it; ``host:port`` only
    that port. As curl, botocore and Python's urllib read it (no CIDR ranges)."""
    entry = entry.strip().lower()
    if not entry:
        return False
    if entry == "*":
        return True
    if entry.startswith("["):  # [::1] or [::1]:443
        name, _, rest = entry[1:].partition("]")
        wanted = rest.removeprefix(":")
    elif entry.count(":") == 1:
        name, _, wanted = entry.partition(":")
    else:
        name, wanted = entry, ""
    if wanted and (not wanted.isdigit() or port != int(wanted)):
        return False
    name = name.lstrip(".")
    host = host.lower().strip("[]")
    return host == name or host.endswith("." + name)


def proxy_failure(exc: BaseException, route: Route | None, what: str) -> Exception | None:
    """What a failure that is the proxy's becomes, naming the setting to fix; None when
    ``exc`` is not about the proxy. Never quotes the proxy's credentials: ``route.url`` has
    none, and aiohttp's messages carry only the status and the proxy's reason phrase."""
    if route is None:
        return None
    import aiohttp  # here: the settings above are read by every config load, the client is not

    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return proxy_refused(exc.status, route, what)
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        reason = str(exc.os_error.strerror or exc.os_error)
        return TransientError(f"{what}: cannot reach the proxy {route.describe()}: {reason}")
    return None


def proxy_refused(status: int, route: Route | None, what: str) -> Exception:
    """The proxy answered ``status`` instead of carrying the request (a CONNECT refused, or
    a 407 to a plain-http request). A 401 to a CONNECT is the proxy's too (tinyproxy answers
    wrong credentials so): both are about the proxy's credentials."""
    where = f"the proxy {route.describe()}" if route is not None else "a proxy"
    if status in (401, 407):
        fix = route.fix_credentials() if route is not None else f"set proxy and {CREDENTIAL_KEYS}"
        said = (
            "refused the credentials" if route is not None and route.authorization else "asks for credentials"
        )
        phrase = " Proxy Authentication Required" if status == 407 else ""
        return SinkFatalError(f"{what}: {where} {said} (HTTP {status}{phrase}): {fix}")
    if status in (408, 429) or status >= 500:
        return TransientError(f"{what}: {where} could not reach the receiver (HTTP {status})")
    return SinkFatalError(
        f"{what}: {where} refused to carry the request (HTTP {status}): allow the receiver at the proxy, "
        "or add its host to NO_PROXY (or unset the sink's proxy) to connect directly"
    )


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
