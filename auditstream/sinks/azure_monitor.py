"""Microsoft Sentinel / Log Analytics through the Azure Monitor Logs Ingestion API.

``POST <endpoint>/dataCollectionRules/<dcr_immutable_id>/streams/<stream_name>`` with an Entra
ID bearer token for Azure Monitor. The endpoint is a data collection endpoint (DCE) or the
DCR's own logs ingestion endpoint; the data collection rule (DCR) transforms the rows and
routes them to a table (``deploy/sentinel/`` has the table, the DCR and a parser).

What comes from Microsoft's libraries (the ``[azure]`` extra: ``azure-identity`` and
``azure-monitor-ingestion``, imported only when such a sink is configured), not from us: the
token (client secret, or without one workload identity then managed identity), its cache and
refresh before it expires; 429 and ``Retry-After`` (also ``retry-after-ms``), honoured by the
SDK's retry policy for a few attempts (``SDK_ATTEMPTS``) before the failure reaches the
delivery machinery, which keeps retrying with its own backoff (forever by default) so health
and metrics see an outage that lasts. The TLS settings of the sink apply to every connection
it makes, the token endpoint's included: both go through one aiohttp session built from
``[sinks.tls]``. Every token the credential hands out is registered with the scrubber
(:class:`RegisteredTokens`).

What is ours: cutting a request into calls (:func:`plan_calls`). The service takes at most
1 MiB per call, compressed and uncompressed. The SDK can cut too, but it sums each row's
``json.dumps`` without the array's separators, so rows summing to just under 1 MiB made a
call a few hundred bytes over it, refused with 413 and halved each time: the sink counts the
body it sends (its own compact JSON, brackets and commas included), gzips it, and hands the
SDK the finished body, which it sends as it is. A row that no call can hold is dead-lettered
whole without being sent.

Each row is the event with ``TimeGenerated`` added: the record's time, RFC 3339 UTC with
seven fractional digits (Kusto's datetime counts 100 ns ticks). ``stream_name`` may contain
``{stream}``: a request holding several audit streams becomes one upload per DCR stream,
sent concurrently (:func:`~auditstream.sinks.delivery.send_in_parts`); a DCR stream's calls
go one after another, in order.

A request settles call by call: a call that failed transiently hands back the rows it and
the calls after it held, to be sent again (the calls that succeeded are not repeated); a
call refused as too large (413) or malformed (400, other 4xx) is halved until the rows
refused on their own are known, and those are dead-lettered with the service's answer.
Fatal, data kept until a human acts:
the token request refused (the ``AADSTS`` code says which of ``tenant_id``, ``client_id``,
``client_secret`` is wrong), no identity available, 401 (a token for another cloud), 403 (the
identity lacks the "Monitoring Metrics Publisher" role on the DCR), 404 (no such DCR or
stream: check ``endpoint``, ``dcr_immutable_id``, ``stream_name``).
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import quote as url_quote
from urllib.parse import urlsplit

import orjson
from pydantic import SecretStr, field_validator, model_validator

from auditstream.ops.secrets import Secrets, config_secrets, register_expiring
from auditstream.sdm.registry import ALL_STREAM_NAMES
from auditstream.sinks.base import Envelope, ProbeResult, SinkError, SinkFatalError
from auditstream.sinks.delivery import Record, TransportSink, WriteResult, send_in_parts
from auditstream.sinks.extras import install_hint, installed
from auditstream.sinks.http_client import check_url, gzip_body, quote, retry_after_seconds
from auditstream.sinks.proxy import ProxiedSinkSettings, ProxyResolver, proxy_failure
from auditstream.sinks.retry import TransientError
from auditstream.sinks.siem import StreamTemplate, record_time

INSTALL_HINT = install_hint("azure")
API_VERSION = "2023-01-01"
MAX_IN_FLIGHT = 2
UPLOADS_AT_ONCE = 4  # calls of one request uploaded concurrently
MAX_CALL_BYTES = 1_048_576  # the service's limit for one call's body, compressed and uncompressed
SDK_ATTEMPTS = 3  # tries of one call inside the SDK (429 / Retry-After) before we see the failure
SDK_BACKOFF = 0.5  # seconds, doubled per SDK retry
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
ROLE = "Monitoring Metrics Publisher"
_DCR_ID = re.compile(r"^dcr-[0-9a-f]{32}$")
_STREAM = re.compile(r"^(Custom|Microsoft)-[A-Za-z0-9_.{}-]+$")
_AADSTS = re.compile(r"AADSTS(\d+)")
# Entra ID's answers to a token request that a setting can fix, by AADSTS code.
AADSTS_FIXES = {
    "7000215": "the client secret is wrong: fix client_secret / client_secret_file "
    "(the secret's value, not its id)",
    "7000222": "the client secret has expired: create a new one, update client_secret / client_secret_file",
    "700016": "no such application in the tenant: fix client_id (or tenant_id)",
    "90002": "no such tenant: fix tenant_id (or authority_host for a sovereign cloud)",
    "900023": "tenant_id is not a tenant id or domain: fix tenant_id",
    "500011": "Azure Monitor is not known to this tenant or cloud: check endpoint and authority_host",
    "70021": "no federated credential matches the workload identity token: check the federated "
    "credential's issuer and subject",
}
# The token audience per cloud, by the ingestion endpoint's domain.
SCOPES = {
    ".azure.us": "https://monitor.azure.us/.default",
    ".azure.cn": "https://monitor.azure.cn/.default",
}
PUBLIC_SCOPE = "https://monitor.azure.com/.default"


def azure_extra_installed() -> bool:
    return installed("azure.monitor.ingestion.aio") and installed("azure.identity.aio")


class AzureMonitorSinkSettings(ProxiedSinkSettings):
    type: Literal["azure_monitor"] = "azure_monitor"
    format: Literal["json"] = "json"
    endpoint: str
    dcr_immutable_id: str
    stream_name: str
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    authority_host: str | None = None

    @field_validator("endpoint", "authority_host")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if urlsplit(check_url(value)).scheme != "https":
            raise ValueError("must be an https:// URL (bearer tokens are never sent in clear)")
        return value.rstrip("/")

    @field_validator("dcr_immutable_id")
    @classmethod
    def _dcr(cls, value: str) -> str:
        if not _DCR_ID.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a DCR immutable id (dcr- and 32 hex digits: the DCR's JSON view, "
                "properties.immutableId; not its resource id)"
            )
        return value

    @field_validator("stream_name")
    @classmethod
    def _stream(cls, value: str) -> str:
        if not _STREAM.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a DCR stream name (Custom-<name> as declared in the DCR's "
                "streamDeclarations, e.g. Custom-StrongDMAudit; {stream} is the audit stream)"
            )
        return value

    @model_validator(mode="after")
    def _identity(self) -> AzureMonitorSinkSettings:
        if not azure_extra_installed():
            raise ValueError(f"the azure_monitor sink needs the Azure extra: {INSTALL_HINT}")
        if self.client_secret is not None and (self.tenant_id is None or self.client_id is None):
            raise ValueError("client_secret needs tenant_id and client_id (the app registration's)")
        if self.tls.server_name is not None:
            raise ValueError("the azure_monitor sink takes tls.verify, ca_file, cert_file and key_file only")
        return self

    @property
    def scope(self) -> str:
        host = urlsplit(self.endpoint).hostname or ""
        return next((scope for suffix, scope in SCOPES.items() if host.endswith(suffix)), PUBLIC_SCOPE)


class AzureMonitorTransport:
    max_in_flight = MAX_IN_FLIGHT

    def __init__(self, settings: AzureMonitorSinkSettings, cef: object = None) -> None:
        self.settings = settings
        self._stream_name = StreamTemplate(settings.stream_name)
        self._secrets = Secrets(config_secrets(settings))
        self._session: Any = None
        self._credential: Any = None
        self._client: Any = None
        self._proxy = ProxyResolver(settings)

    def encode(self, envelope: Envelope) -> bytes:
        return orjson.dumps({"TimeGenerated": record_time(envelope.time_ns, 7), **envelope.event})

    # -- the clients ----------------------------------------------------------------------

    async def open(self) -> None:
        if self._client is not None:
            return
        import aiohttp
        from azure.core.pipeline.transport import AioHttpTransport
        from azure.monitor.ingestion.aio import LogsIngestionClient

        # One line per HTTP request at INFO otherwise; failures reach our logs as errors.
        logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)
        connector = aiohttp.TCPConnector(ssl=self.settings.tls.ssl_context(), limit=8)
        self._session = aiohttp.ClientSession(connector=connector)

        proxies = self._proxy

        class ProxiedTransport(AioHttpTransport):  # type: ignore[misc]
            """azure-core's aiohttp transport, each request through the sink's egress proxy
            (the token endpoint's too): our session does not read the environment itself."""

            async def send(self, request: Any, **config: Any) -> Any:
                route = proxies.route(request.url)
                if route is not None:
                    config.setdefault("proxy", route.url)
                    if (headers := route.connect_headers(request.url)) is not None:
                        config.setdefault("proxy_headers", headers)
                return await super().send(request, **config)

        def transport() -> Any:  # one each: closing a pipeline must not close the other's
            return ProxiedTransport(
                session=self._session,
                session_owner=False,
                connection_timeout=CONNECT_TIMEOUT,
                read_timeout=READ_TIMEOUT,
            )

        retry = {"retry_total": SDK_ATTEMPTS - 1, "retry_backoff_factor": SDK_BACKOFF}
        self._credential = RegisteredTokens(
            self._make_credential(transport, retry), f"azure_monitor:{self.settings.name}"
        )
        self._client = LogsIngestionClient(
            self.settings.endpoint,
            self._credential,
            transport=transport(),
            credential_scopes=[self.settings.scope],
            **retry,
        )

    def _make_credential(self, transport: Any, retry: dict[str, Any]) -> Any:
        from azure.identity.aio import (
            ChainedTokenCredential,
            ClientSecretCredential,
            ManagedIdentityCredential,
            WorkloadIdentityCredential,
        )

        s = self.settings
        common: dict[str, Any] = dict(retry)
        if s.authority_host is not None:
            common["authority"] = s.authority_host
        if s.client_secret is not None:
            assert s.tenant_id is not None and s.client_id is not None
            return ClientSecretCredential(
                s.tenant_id, s.client_id, s.client_secret.get_secret_value(), transport=transport(), **common
            )
        chain: list[Any] = []
        if os.environ.get("AZURE_FEDERATED_TOKEN_FILE"):  # AKS workload identity's webhook sets it
            chain.append(
                WorkloadIdentityCredential(
                    tenant_id=s.tenant_id, client_id=s.client_id, transport=transport(), **common
                )
            )
        chain.append(ManagedIdentityCredential(client_id=s.client_id, transport=transport(), **retry))
        return ChainedTokenCredential(*chain)

    async def close(self) -> None:
        client, credential, session = self._client, self._credential, self._session
        self._client = self._credential = self._session = None
        if client is not None:
            await client.close()
        if credential is not None:
            await credential.close()
        if session is not None:
            await session.close()

    # -- delivery -------------------------------------------------------------------------

    async def write(self, records: Sequence[Record]) -> WriteResult:
        if self._client is None:
            await self.open()
        oversize: dict[int, str] = {}
        parts: dict[str, list[int]] = {}
        for index, record in enumerate(records):
            if len(record.payload) + 2 > MAX_CALL_BYTES:
                oversize[index] = (
                    f"row is {len(record.payload):,} bytes of JSON; the Logs Ingestion API takes at most "
                    f"{MAX_CALL_BYTES:,} per call, so it can never be sent (kept here whole)"
                )
            else:
                parts.setdefault(self._stream_name(record.envelope.stream), []).append(index)

        async def upload(part: Sequence[int]) -> WriteResult:
            return await self._upload_stream(records, part)

        result = WriteResult()
        if parts:
            result = await send_in_parts(list(parts.values()), upload, UPLOADS_AT_ONCE)
        result.invalid.update(oversize)
        return result

    async def _upload_stream(self, records: Sequence[Record], part: Sequence[int]) -> WriteResult:
        """One DCR stream's rows, as calls of at most ``MAX_CALL_BYTES`` sent one after another
        (the order of a stream's rows is kept, as the SDK kept it). A call that fails
        transiently after others succeeded hands back the rows not yet taken, so the calls
        that succeeded are not repeated."""
        result = WriteResult()
        calls = plan_calls(part, [len(records[i].payload) for i in part])
        for number, call in enumerate(calls):
            try:
                outcome = await self._upload(records, call)
            except TransientError:
                if number == 0:
                    raise
                result.resend.append([index for later in calls[number:] for index in later])
                return result
            result.rejected.update(outcome.rejected)
            result.resend.extend(outcome.resend)
        return result

    async def _upload(self, records: Sequence[Record], indexes: Sequence[int]) -> WriteResult:
        """One call: the rows of ``indexes`` (one DCR stream) as one JSON array, gzipped,
        which the SDK sends as it is (an IO body is not cut again)."""
        name = self._stream_name(records[indexes[0]].envelope.stream)
        body = await gzip_body(b"[" + b",".join(records[i].payload for i in indexes) + b"]")
        try:
            await self._client.upload(self.settings.dcr_immutable_id, name, io.BytesIO(body))
        except Exception as exc:
            outcome = self._classify(exc, name)
            if isinstance(outcome, SinkFatalError | TransientError):
                raise outcome from None
            # 400, 413...: the service takes a call whole or not at all, so halve it
            return WriteResult.bisect(len(indexes), str(outcome)).within(indexes)
        return WriteResult()

    def _classify(self, exc: BaseException, name: str) -> Exception:
        """TransientError, SinkFatalError, or a SinkError for rows the service refused."""
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ServiceRequestError,
            ServiceResponseError,
        )
        from azure.identity import CredentialUnavailableError

        where = f"{self.settings.endpoint} DCR {self.settings.dcr_immutable_id} stream {name}"
        refused = self._proxy_failure(exc, where)
        if refused is not None:
            return refused
        if isinstance(exc, CredentialUnavailableError):
            return SinkFatalError(
                f"no Azure identity to get a token with: {self._quote(exc)}; set tenant_id, client_id and "
                "client_secret / client_secret_file, or run with a managed identity or AKS workload identity"
            )
        if isinstance(exc, ClientAuthenticationError) and not self._from_ingestion(exc):
            return self._token_error(exc)
        if isinstance(exc, HttpResponseError) and exc.status_code is not None:
            return self._status_error(exc, int(exc.status_code), where)
        if isinstance(exc, ServiceRequestError | ServiceResponseError | OSError | TimeoutError):
            return TransientError(f"{where}: {type(exc).__name__}: {self._quote(exc)}")
        return SinkFatalError(f"{where}: unexpected {type(exc).__name__}: {self._quote(exc)}")

    def _proxy_failure(self, exc: BaseException, where: str) -> Exception | None:
        """A failure of the egress proxy, however deep azure-core and azure-identity wrapped
        aiohttp's error (``inner_exception``, ``__cause__``), said as the proxy's."""
        hosts = [self.settings.endpoint, self.settings.authority_host or "https://login.microsoftonline.com"]
        route = next((r for r in map(self._proxy.route, hosts) if r is not None), None)
        seen: BaseException | None = exc
        for _ in range(6):
            if seen is None:
                break
            refused = proxy_failure(seen, route, where)
            if refused is not None:
                return refused
            seen = getattr(seen, "inner_exception", None) or seen.__cause__ or seen.__context__
        return None

    def _from_ingestion(self, exc: Any) -> bool:
        response = getattr(exc, "response", None)
        url = str(getattr(getattr(response, "request", None), "url", "") or "")
        return url.startswith(self.settings.endpoint)

    def _token_error(self, exc: Any) -> Exception:
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        text = self._quote(exc)
        if status is not None and (status in (408, 429) or status >= 500):
            return TransientError(f"token request: HTTP {status}: {text}")
        code = _AADSTS.search(str(exc))
        fix = AADSTS_FIXES.get(code.group(1), "") if code else ""
        return SinkFatalError(
            f"Entra ID refused the token request: {text}"
            + (
                f"; {fix}"
                if fix
                else "; check tenant_id, client_id, client_secret / client_secret_file and authority_host"
            )
        )

    def _status_error(self, exc: Any, status: int, where: str) -> Exception:
        text = self._quote(getattr(exc, "message", None) or exc)
        said = f"{where}: HTTP {status}: {text}"
        if status in (408, 429) or status >= 500:
            headers = getattr(getattr(exc, "response", None), "headers", {}) or {}
            return TransientError(said, _retry_after(headers))
        if status == 401:
            return SinkFatalError(
                f"{said}; the token was refused: is authority_host the cloud of endpoint (a token of "
                "another cloud or tenant)?"
            )
        if status == 403:
            return SinkFatalError(
                f'{said}; grant the identity (client_id) the "{ROLE}" role on the DCR (it can take '
                "30 minutes to apply)"
            )
        if status == 404:
            return SinkFatalError(
                f"{said}; no such DCR or stream: check endpoint, dcr_immutable_id and stream_name"
            )
        if 300 <= status < 400:
            return SinkFatalError(f"{said}; the endpoint redirects: set endpoint to the final address")
        return SinkError(f"Azure Monitor: HTTP {status}: {text}")  # 400, 413, ...: about the rows

    def _quote(self, value: object) -> str:
        return quote(str(value), self._secrets)

    # -- check ----------------------------------------------------------------------------

    async def probe(self) -> ProbeResult:
        """A token, then an empty upload to each DCR stream this sink writes to: it carries no
        row, but the service checks the token and the role first."""
        await self.open()
        try:
            await self._credential.get_token(self.settings.scope)
        except Exception as exc:
            return ProbeResult(False, f"token request: {self._classify(exc, '-')}")
        names = sorted({self._stream_name(s) for s in ALL_STREAM_NAMES if self.settings.routes(s)})
        if not names:
            names = [self.settings.stream_name]
        results = await asyncio.gather(*(self._probe_stream(name) for name in names))
        failures = [detail for ok, detail in results if not ok]
        if failures:
            return ProbeResult(False, "; ".join(failures))
        return ProbeResult(
            True,
            f"token for {self.settings.scope} obtained; {self.settings.endpoint} accepts it for DCR "
            f"{self.settings.dcr_immutable_id}, stream{'s' if len(names) > 1 else ''} {', '.join(names)}",
        )

    async def _probe_stream(self, name: str) -> tuple[bool, str]:
        from azure.core.rest import HttpRequest

        path = f"/dataCollectionRules/{url_quote(self.settings.dcr_immutable_id)}/streams/{url_quote(name)}"
        request = HttpRequest("POST", path, params={"api-version": API_VERSION}, json=[])
        try:
            response = await self._client.send_request(request)
        except Exception as exc:
            return False, str(self._classify(exc, name))
        status = response.status_code
        if 200 <= status < 300 or status in (400, 413):
            return True, ""
        from azure.core.exceptions import HttpResponseError

        error = HttpResponseError(response=response)
        outcome = self._status_error(error, status, f"{self.settings.endpoint} stream {name}")
        return False, str(outcome)


class RegisteredTokens:
    """The sink's Entra ID credential, registering every token it hands out with the scrubber.

    A bearer token is a credential the configuration never held, so ``config_secrets`` cannot
    know it, yet gateways and proxies quote the ``Authorization`` header back in their errors,
    which reach logs, health and dead-letter reasons. Tokens expire within the hour and are
    renewed: :func:`~auditstream.ops.secrets.register_expiring` keeps the newest two of this
    sink's, so the scrubber does not grow by a token an hour."""

    def __init__(self, credential: Any, slot: str) -> None:
        self._credential = credential
        self._slot = slot

    def _seen(self, token: Any) -> Any:
        value = getattr(token, "token", None)
        if isinstance(value, str) and value:
            register_expiring(self._slot, value)
        return token

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        return self._seen(await self._credential.get_token(*scopes, **kwargs))

    async def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        if hasattr(self._credential, "get_token_info"):
            return self._seen(await self._credential.get_token_info(*scopes, options=options))
        from azure.core.credentials import AccessTokenInfo  # an azure-identity older than its core

        token = self._seen(await self._credential.get_token(*scopes))
        return AccessTokenInfo(token.token, token.expires_on)

    async def close(self) -> None:
        await self._credential.close()

    async def __aenter__(self) -> RegisteredTokens:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def plan_calls(indexes: Sequence[int], sizes: Sequence[int]) -> list[list[int]]:
    """Cut the rows ``indexes`` of one DCR stream (``sizes``: bytes of each row's JSON, none
    over a call) into calls whose body, the JSON array ``[row,row,...]`` with its brackets
    and commas, is at most ``MAX_CALL_BYTES``.

    The SDK's own cutting sums ``json.dumps(row)`` alone and then sends ``json.dumps(rows)``,
    which adds ", " between rows: a call of rows summing to just under 1 MiB came out a few
    hundred bytes over and was refused with 413, then halved, every time. Counting what is
    sent costs nothing: the rows are the sink's own compact JSON, already encoded."""
    calls: list[list[int]] = []
    call: list[int] = []
    body = 0
    for index, size in zip(indexes, sizes, strict=True):
        if call and body + 1 + size > MAX_CALL_BYTES:
            calls.append(call)
            call = []
        body = body + 1 + size if call else 2 + size
        call.append(index)
    if call:
        calls.append(call)
    return calls


def _retry_after(headers: Any) -> float | None:
    """Azure's ``retry-after-ms`` / ``x-ms-retry-after-ms`` (milliseconds), else ``Retry-After``."""
    for header in ("retry-after-ms", "x-ms-retry-after-ms"):
        value = headers.get(header)
        if value is not None:
            try:
                return float(value) / 1000
            except ValueError:
                pass
    return retry_after_seconds(headers.get("Retry-After"))


class AzureMonitorSink(TransportSink):
    transport_class = AzureMonitorTransport
