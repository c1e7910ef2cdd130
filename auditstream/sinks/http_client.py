"""What the sinks that speak HTTP themselves share (http, splunk_hec, elasticsearch, datadog):
one aiohttp session per sink (connection reuse), TLS from the sink's settings, the egress
proxy (:mod:`auditstream.sinks.proxy`), gzip, timeouts, and turning transport failures and
HTTP statuses into retry decisions. A 407 is always the proxy's, never the receiver's: it is
answered here, naming the proxy settings, before any sink reads the status.

Error messages name the method, URL and status, never a header: credentials travel only in
headers, and URLs with ``user:password@`` are refused at configuration time. A receiver's
answer is quoted only through :meth:`HttpResponse.quote`: scrubbed of the registered secrets
and of the sink's own credentials first, then cut to one line of at most 200 characters, so
a receiver that echoes the ``Authorization`` header (some do, in error bodies) cannot put a
credential into a log line, ``/readyz`` or a dead-letter reason, not even half of one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import gzip
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import structlog

if TYPE_CHECKING:  # imported when a session opens: a daemon without HTTP sinks never loads it
    import aiohttp
    from multidict import CIMultiDictProxy

from auditstream.ops.secrets import Secrets, config_secrets, redact
from auditstream.settings_base import TlsSettings
from auditstream.sinks.proxy import ProxiedSinkSettings, ProxyResolver, proxy_failure, proxy_refused
from auditstream.sinks.retry import TransientError

log = structlog.get_logger("auditstream.sinks.http")

# Compress bigger bodies off the event loop so other streams are not stalled meanwhile.
_GZIP_IN_THREAD_ABOVE = 256 * 1024
_GZIP_LEVEL = 5

QUOTE_LIMIT = 200
"""Characters of a receiver's answer quoted in an error or dead-letter reason."""

FATAL_STATUSES = {
    401: "credentials rejected: check the auth settings",
    403: "forbidden: check the auth settings",
    404: "no such URL: check url",
    405: "method not allowed: check url",
    407: "proxy authentication required: set proxy and proxy_username / proxy_password",
    410: "gone: check url",
    415: "unsupported media type: check body, format and gzip",
    426: "upgrade required: check url (https?)",
}
"""Statuses about the request or the sink's configuration, never about an event: nothing is
dead-lettered (a file full of good events because of a typo would help no one); the sink
stops with the data kept until a human fixes the setting named here."""


def check_url(value: str) -> str:
    """Validator for ``url`` settings: http(s), a host, and no credentials in it."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("put credentials in the auth settings, not in the URL (URLs end up in logs)")
    return value


def cleartext_warning(settings: ProxiedSinkSettings) -> str | None:
    """What ``check`` and the start say of credentials a sink sends over plain ``http://``."""
    urls = settings.cleartext_credential_urls()
    if not urls:
        return None
    return f"credentials are sent over plain http:// to {', '.join(urls)}; use https://"


def warn_if_cleartext(settings: ProxiedSinkSettings) -> None:
    """Credentials over plain http:// are allowed (a local collector) but never silently."""
    warning = cleartext_warning(settings)
    if warning is not None:
        log.warning(warning, sink=settings.name)


def retry_after_seconds(value: str | None, now: dt.datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: either delta-seconds or an HTTP date; None if absent/bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max((when - (now or dt.datetime.now(dt.UTC))).total_seconds(), 0.0)


def is_transient_status(status: int) -> bool:
    """408, 429 and every 5xx are worth retrying; other statuses are answers."""
    return status in (408, 429) or status >= 500


def quote(text: str, secrets: Secrets | None = None, limit: int = QUOTE_LIMIT) -> str:
    """``text`` fit to quote: secrets replaced, on one line, at most ``limit`` characters.

    Scrubbed before it is cut, so a secret straddling the cut is replaced whole rather than
    left half there; scrubbed again once whitespace is collapsed, as that can join the parts
    of a secret that holds a line break."""
    text = redact(" ".join(redact(text, secrets).split()), secrets)
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    secrets: Secrets = field(default_factory=Secrets, repr=False)

    def quote(self, text: object = None) -> str:
        """``text`` (the body when None) as :func:`quote` makes it safe to repeat."""
        if text is None:
            text = self.body.decode("utf-8", errors="replace")
        return quote(str(text), self.secrets)

    def excerpt(self) -> str:
        """The body, quoted."""
        return self.quote()

    def transient_error(self, what: str) -> TransientError:
        return TransientError(
            f"{what}: HTTP {self.status} {self.excerpt()}".rstrip(),
            retry_after_seconds(self.headers.get("Retry-After")),
        )


class HttpClient:
    """A reusable session; every failure to get a response becomes a TransientError.

    ``secrets`` are the sink's own credentials: answers and errors are scrubbed of them as
    well as of the process-wide registry."""

    def __init__(
        self,
        tls: TlsSettings,
        timeout: float,
        max_connections: int,
        secrets: Iterable[str] = (),
        proxy: ProxyResolver | None = None,
    ) -> None:
        self.secrets = Secrets(secrets)
        self._proxy = proxy
        self._tls = tls
        self._timeout = timeout
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def for_sink(cls, settings: ProxiedSinkSettings, timeout: float, max_connections: int) -> HttpClient:
        """The client of an HTTP sink: its TLS settings, its credentials scrubbed from what it
        quotes, and its egress proxy."""
        return cls(settings.tls, timeout, max_connections, config_secrets(settings), ProxyResolver(settings))

    async def open(self) -> None:
        """Build the TLS context (raising ValueError naming a bad file) and the session."""
        import aiohttp

        context: ssl.SSLContext = self._tls.ssl_context()
        connector = aiohttp.TCPConnector(ssl=context, limit=max(self._max_connections, 1))
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self._timeout or None),
            auto_decompress=True,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        compress: bool = False,
    ) -> HttpResponse:
        import aiohttp

        if self._session is None:
            await self.open()  # probes run without start()
        assert self._session is not None
        send_headers = dict(headers or {})
        if body is not None and compress:
            body = await gzip_body(body)
            send_headers["Content-Encoding"] = "gzip"
        what = f"{method} {url}"
        route = self._proxy.route(url) if self._proxy is not None else None
        if route is not None:
            send_headers.update(route.request_headers(url))
        try:
            async with self._session.request(
                method,
                url,
                data=body,
                headers=send_headers,
                allow_redirects=False,
                server_hostname=self._tls.server_name,
                proxy=route.url if route is not None else None,
                proxy_headers=route.connect_headers(url) if route is not None else None,
            ) as response:
                if response.status == 407:  # a plain-http request the proxy would not carry
                    raise proxy_refused(407, route, what)
                body = await response.read()
                return HttpResponse(response.status, response.headers, body, self.secrets)
        except TimeoutError:
            raise TransientError(f"{what}: no response within {self._timeout:g}s") from None
        except aiohttp.ClientSSLError as exc:
            # A certificate problem will not fix itself quickly, but it may be a rotation in
            # progress; retry (health goes FAILED after unhealthy_after) rather than drop data.
            reason = f"TLS error: {exc.__class__.__name__}: {_reason(exc)}"
            raise TransientError(f"{what}: {redact(reason, self.secrets)}") from None
        except (aiohttp.ClientError, OSError) as exc:
            refused = proxy_failure(exc, route, what)
            if refused is not None:
                raise refused from None
            reason = f"{exc.__class__.__name__}: {_reason(exc)}"
            raise TransientError(f"{what}: {redact(reason, self.secrets)}") from None


def _reason(exc: BaseException) -> str:
    import aiohttp

    if isinstance(exc, aiohttp.ClientConnectorError):
        return str(exc.os_error.strerror or exc.os_error)
    return str(exc) or exc.__class__.__name__


async def gzip_body(body: bytes) -> bytes:
    """``body`` gzip-compressed (off the event loop when large), without a timestamp, so the
    same body always compresses to the same bytes."""
    if len(body) > _GZIP_IN_THREAD_ABOVE:
        return await asyncio.to_thread(gzip.compress, body, _GZIP_LEVEL, mtime=0)
    return gzip.compress(body, _GZIP_LEVEL, mtime=0)
