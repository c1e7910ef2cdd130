"""Microsoft Entra ID (token endpoint) and Azure Monitor Logs Ingestion stand-ins, strict to:

* "Microsoft identity platform and the OAuth 2.0 client credentials flow",
  https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow :
  ``POST /{tenant}/oauth2/v2.0/token``, form-encoded ``grant_type=client_credentials``,
  ``client_id``, ``scope`` (``<resource>/.default``) and either ``client_secret`` or
  ``client_assertion`` with ``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer``
  (workload identity federation). Success: ``token_type``, ``expires_in``, ``access_token``.
  Errors: ``error``, ``error_description`` (starting with the AADSTS code), ``error_codes``:
  AADSTS90002 unknown tenant (400 ``invalid_request``), AADSTS700016 unknown application (400
  ``unauthorized_client``), AADSTS7000215 wrong secret (401 ``invalid_client``),
  AADSTS70021 no matching federated credential (400 ``invalid_request``), AADSTS1002012 a
  scope without ``/.default`` (400 ``invalid_scope``).
* OpenID Connect discovery, https://learn.microsoft.com/en-us/entra/identity-platform/v2-protocols-oidc :
  ``GET /{tenant}/v2.0/.well-known/openid-configuration`` names the issuer and token endpoint.
* Logs Ingestion API, https://learn.microsoft.com/en-us/rest/api/monitor/data-collection-rules/upload
  (REST reference "Logs Ingestion - Upload", api-version 2023-01-01) and the limits in
  https://learn.microsoft.com/en-us/azure/azure-monitor/fundamentals/service-limits#logs-ingestion-api :
  ``POST /dataCollectionRules/{dcr}/streams/{stream}?api-version=2023-01-01`` with
  ``Authorization: Bearer`` (401 ``InvalidAuthenticationToken`` when missing, unknown, expired,
  or for another audience), ``Content-Type: application/json``, ``Content-Encoding: gzip``
  optional; at most 1 MB (1,048,576 bytes) per call, compressed and uncompressed (413
  ``RequestEntityTooLarge``); the body a JSON array of objects (400 ``InvalidPayload``);
  the caller must hold "Monitoring Metrics Publisher" on the DCR (403 ``OperationFailed``:
  "The authentication token provided does not have access to ingest data for the data
  collection rule with immutable Id ..."); an unknown DCR or stream is 404; 429 with
  ``Retry-After`` when throttled; 204 when accepted.

Fault switches: ``faults`` (statuses for the next calls), ``throttle`` (the next N calls get
429 ``TooManyRequests`` with ``Retry-After``), ``reject_when`` (a row predicate: 400, the call
taken whole or not at all), ``echo_authorization`` (every error message starts by quoting the
request's ``Authorization`` header, bearer token and all, as some gateways do).
"""

from __future__ import annotations

import gzip
import json
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.peers.base import AiohttpPeer

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_CALL = 1_048_576
API_VERSION = "2023-01-01"


@dataclass
class Token:
    client_id: str
    audience: str
    expires_at: float


def _aad_error(status: int, error: str, code: int, text: str) -> web.Response:
    body = {
        "error": error,
        "error_description": f"AADSTS{code}: {text} Trace ID: {uuid.uuid4()} Timestamp: 2024-05-01 12:00:00Z",
        "error_codes": [code],
        "timestamp": "2024-05-01 12:00:00Z",
        "trace_id": str(uuid.uuid4()),
        "correlation_id": str(uuid.uuid4()),
    }
    return web.json_response(body, status=status)


class EntraReceiver(AiohttpPeer):
    """Issues opaque tokens; ``tokens`` is what the ingestion stand-in checks them against."""

    def __init__(
        self,
        *,
        tenant_id: str,
        apps: dict[str, str] | None = None,
        federated: dict[str, str] | None = None,
        expires_in: int = 3599,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.tenant_id = tenant_id
        self.apps = dict(apps or {})  # client_id -> client secret
        self.federated = dict(federated or {})  # client_id -> the workload's (federated) token
        self.expires_in = expires_in
        self.tokens: dict[str, Token] = {}
        self.token_requests: list[dict[str, str]] = []  # the form of each, secrets included
        self.discovery_requests = 0

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", self._openid)
        return app

    async def _openid(self, request: web.Request) -> web.Response:
        self.discovery_requests += 1
        tenant = request.match_info["tenant"]
        if tenant != self.tenant_id:
            return _aad_error(400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found.")
        base = self.base_url
        return web.json_response(
            {
                "issuer": f"{base}/{tenant}/v2.0",
                "token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/authorize",
                "jwks_uri": f"{base}/{tenant}/discovery/v2.0/keys",
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
                "tenant_region_scope": "EU",
            }
        )

    async def _token(self, request: web.Request) -> web.Response:
        self.attempts += 1
        if request.content_type != "application/x-www-form-urlencoded":
            return _aad_error(400, "invalid_request", 900144, "The request body must contain 'grant_type'.")
        form = {key: str(value) for key, value in (await request.post()).items()}
        self.token_requests.append(form)
        if (status := self.faults.next_failure()) is not None:
            return web.json_response({"error": "temporarily_unavailable"}, status=status)
        if request.match_info["tenant"] != self.tenant_id:
            return _aad_error(
                400, "invalid_request", 90002, f"Tenant '{request.match_info['tenant']}' not found."
            )
        if form.get("grant_type") != "client_credentials":
            return _aad_error(
                400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type."
            )
        client_id = form.get("client_id", "")
        if client_id not in self.apps and client_id not in self.federated:
            return _aad_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found.",
            )
        scope = form.get("scope", "")
        if not scope.endswith("/.default") or " " in scope:
            return _aad_error(
                400, "invalid_scope", 1002012, f"The provided value for scope {scope} is not valid."
            )
        if "client_assertion" in form:
            if (
                form.get("client_assertion_type") != ASSERTION_TYPE
                or self.federated.get(client_id) != form["client_assertion"]
            ):
                return _aad_error(
                    400, "invalid_request", 70021, "No matching federated identity record found."
                )
        elif self.apps.get(client_id) != form.get("client_secret"):
            return _aad_error(401, "invalid_client", 7000215, "Invalid client secret provided.")
        token = secrets.token_urlsafe(32)
        audience = scope.removesuffix("/.default").rstrip("/")
        self.tokens[token] = Token(client_id, audience, time.time() + self.expires_in)
        answer = {"token_type": "Bearer", "expires_in": self.expires_in, "ext_expires_in": self.expires_in}
        return web.json_response({**answer, "access_token": token})


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    all_headers = {"x-ms-error-code": code, **(headers or {})}
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=all_headers
    )


class LogsIngestionReceiver(AiohttpPeer):
    auto_decompress = False  # the 1 MB limit counts the body as sent and inflated

    def __init__(self, *, entra: EntraReceiver, dcrs: dict[str, set[str]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.entra = entra
        self.dcrs = {dcr: set(streams) for dcr, streams in dcrs.items()}  # dcr -> stream names
        self.publishers: set[tuple[str, str]] = set()  # (client_id, dcr) with the role
        self.audience = "https://monitor.azure.com"
        self.throttle = 0
        self.retry_after = "1"
        self.reject_when: Callable[[dict[str, Any]], bool] | None = None
        self.rows: list[tuple[str, dict[str, Any]]] = []  # (stream, row) in order of arrival
        self.call_sizes: list[tuple[int, int]] = []  # (compressed, uncompressed) of accepted calls
        self.refused: list[int] = []  # statuses answered
        self.echo_authorization = False
        self._authorization = ""

    def grant(self, client_id: str, dcr: str) -> None:
        self.publishers.add((client_id, dcr))

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=16 * MAX_CALL)
        app.router.add_post("/dataCollectionRules/{dcr}/streams/{stream}", self._upload)
        return app

    def _refuse(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        self.refused.append(status)
        if self.echo_authorization:
            message = f"(you sent Authorization: {self._authorization}) {message}"
        return _error(status, code, message, headers)

    async def _upload(self, request: web.Request) -> web.Response:
        self.attempts += 1
        await self.slow_down()
        if request.query.get("api-version") != API_VERSION:
            return self._refuse(400, "InvalidApiVersion", "api-version 2023-01-01 is required")
        self._authorization = request.headers.get("Authorization", "")
        scheme, _, value = self._authorization.partition(" ")
        token = self.entra.tokens.get(value) if scheme == "Bearer" else None
        if token is None or token.expires_at < time.time():
            return self._refuse(
                401, "InvalidAuthenticationToken", "The access token is missing, invalid or expired."
            )
        if token.audience != self.audience:
            return self._refuse(
                401,
                "InvalidAuthenticationTokenAudience",
                f"The access token has the wrong audience {token.audience}.",
            )
        dcr, stream = request.match_info["dcr"], request.match_info["stream"]
        if (token.client_id, dcr) not in self.publishers:
            message = (
                "The authentication token provided does not have access to ingest data for the data "
                f"collection rule with immutable Id '{dcr}'."
            )
            return self._refuse(403, "OperationFailed", message)
        if dcr not in self.dcrs:
            return self._refuse(404, "NotFound", f"Data collection rule with immutable Id '{dcr}' not found.")
        if stream not in self.dcrs[dcr]:
            return self._refuse(
                404, "InvalidStream", f"Stream '{stream}' is not declared in the data collection rule."
            )
        if (status := self.faults.next_failure()) is not None:
            return self._refuse(status, "ServiceUnavailable", "injected", self.failure_headers())
        if self.throttle > 0:
            self.throttle -= 1
            return self._refuse(429, "TooManyRequests", "throttled", {"Retry-After": self.retry_after})
        if request.content_type != "application/json":
            return self._refuse(415, "UnsupportedMediaType", "Content-Type must be application/json")
        raw = await request.read()  # as sent (auto_decompress is off)
        body = gzip.decompress(raw) if request.headers.get("Content-Encoding") == "gzip" else raw
        if len(raw) > MAX_CALL or len(body) > MAX_CALL:
            return self._refuse(
                413, "RequestEntityTooLarge", f"{len(raw):,} / {len(body):,} bytes; 1 MB at most"
            )
        try:
            rows = json.loads(body)
        except ValueError:
            return self._refuse(400, "InvalidPayload", "The body is not JSON.")
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            return self._refuse(400, "InvalidPayload", "The body must be a JSON array of objects.")
        if self.reject_when is not None and any(self.reject_when(row) for row in rows):
            return self._refuse(400, "InvalidPayload", "A row does not match the stream's declaration.")
        self.call_sizes.append((len(raw), len(body)))
        self.rows.extend((stream, row) for row in rows)
        await self.accept(rows)
        return web.Response(status=204)
