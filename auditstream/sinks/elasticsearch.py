"""Elasticsearch 8+ and OpenSearch 2+: ``POST /_bulk`` with one ``create`` action per event.

Each event becomes a document carrying ``@timestamp`` (the record's time, RFC 3339 UTC with
nine fractional digits) and an ``_id`` derived from the record's stream and key. ``create``
refuses an ``_id`` that exists in the index it writes to (409), so a batch the engine sends
again after a crash, or a request retried after a lost answer, is answered 409 item by item:
counted as already indexed, not as a failure.

The guarantee is per concrete index, not per data stream: Elasticsearch checks the ``_id``
only in the write index, and a data stream's write index is its newest backing index. A
record sent again after the data stream rolled over (ILM, the data stream lifecycle) is
indexed a second time, in the new backing index; so is one sent to a rollover alias given as
``index``. Only a plain index holds each record exactly once. Writing again to the backing
index the first delivery used is not possible: Elasticsearch refuses ``create`` addressed to a
backing index, and after a lost answer or a crash that index is not known. docs/sinks.md says
how to collapse duplicates in searches (on ``id``).

The response is read item by item, never as a whole:

* 201 (or any 2xx): indexed; 409: already indexed (a re-delivery);
* 429 (``es_rejected_execution_exception``) and 5xx (a busy or relocating shard): sent again,
  those items alone, in one request; when every item of a request was refused that way, the
  request is retried with backoff instead;
* any other 4xx (``mapper_parsing_exception``, ``document_parsing_exception``...): that event
  is dead-lettered with the item's error type and reason; the rest of the request is not
  sent again for it. The same error for every item of a stream (``index_closed_exception``:
  a closed index) is the target's refusal: the delivery machinery fails the sink for that
  stream, nothing dead-lettered;
* refusals that are about the configuration, not the event, stop the sink with the data
  kept: 401/403 (credentials, a missing privilege: the reason names it), 404
  (``index_not_found_exception``: auto-creation is off), a missing ingest ``pipeline``.

For the request as a whole: 401, 403 and the statuses about the URL are fatal; 413 (over
``http.max_content_length``) and other 4xx bisect the request; 429 and 5xx are retried,
``Retry-After`` honoured. Requests go to ``urls`` in turn, so a retry after a node failed
goes to the next node. Bodies are gzip-compressed (both products inflate requests).

Why plain HTTP (:mod:`auditstream.sinks.http_client`) and not the official ``elasticsearch``
client: (1) the client refuses to talk to OpenSearch at all (since 7.14 it raises
``UnsupportedProductError`` on any 2xx answer without ``X-Elastic-Product: Elasticsearch``),
and OpenSearch 2+ is a target; (2) its 9.x line sends ``compatible-with=9`` media types that
Elasticsearch 8 refuses, so it would be pinned below 9 for good; (3) its bulk helpers retry
only 429 items, with their own ``asyncio.sleep`` backoff inside the call, a second retry
layer beside the delivery machinery's (which health, metrics and ``Retry-After`` go
through), and they treat a 409 on ``create`` as an error. What is left to write is one
NDJSON body and a loop over ``items``; no extra to install.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import re
from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import quote as url_quote

import orjson
import structlog
from pydantic import Field, SecretStr, field_validator, model_validator

from auditstream.formats import Encoding, make_document_encoder
from auditstream.sinks.base import Envelope, ProbeResult, SinkFatalError
from auditstream.sinks.delivery import Record, TransportSink, WriteResult
from auditstream.sinks.http_client import (
    FATAL_STATUSES,
    HttpClient,
    HttpResponse,
    check_url,
    is_transient_status,
    quote,
    warn_if_cleartext,
)
from auditstream.sinks.proxy import ProxiedSinkSettings
from auditstream.sinks.retry import TransientError
from auditstream.sinks.siem import STREAM_PLACEHOLDER, StreamTemplate, record_time, settle_items

log = structlog.get_logger("auditstream.sinks.elasticsearch")

DEFAULT_DATA_STREAM = "logs-strongdm.{stream}-default"
# ECS documents get their own namespace, so deploy/elastic/index-template.ecs.json (ECS
# mappings) applies to them and index-template.json (the JSON event's) to the rest.
DEFAULT_ECS_DATA_STREAM = "logs-strongdm.{stream}-ecs"
TIMEOUT = 60.0
MAX_IN_FLIGHT = 4
WRITE_PRIVILEGES = ("create_doc", "auto_configure")
# Request statuses about the request, never an event, beyond the generic ones.
_FATAL = {**FATAL_STATUSES, 406: "content type refused: is this Elasticsearch or OpenSearch?"}
_INVALID_NAME = re.compile(r'[\\/*?"<>| ,#:A-Z]')
_MISSING_PIPELINE = re.compile(r"pipeline with id \[[^\]]*\] does not exist")


def document_id(stream: str, key: str) -> str:
    """The ``_id`` of a record: the same record always gets the same one (32 hex digits)."""
    return hashlib.blake2b(f"{stream}\n{key}".encode(), digest_size=16).hexdigest()


class ElasticsearchSinkSettings(ProxiedSinkSettings):
    type: Literal["elasticsearch"] = "elasticsearch"
    # json: the event; ocsf: the OCSF event; ecs: the ECS document. Each gets @timestamp.
    format: Literal["json", "ocsf", "ecs"] = "json"
    urls: list[str] = Field(min_length=1)
    data_stream: str | None = None
    index: str | None = None
    api_key: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    pipeline: str | None = Field(default=None, min_length=1)

    def credential_urls(self) -> list[str]:
        return list(self.urls) if self.api_key is not None or self.username is not None else []

    @field_validator("urls")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        return [check_url(url).rstrip("/") for url in urls]

    @field_validator("data_stream", "index")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        sample = value.replace(STREAM_PLACEHOLDER, "activities")
        if not sample or _INVALID_NAME.search(sample) or sample[0] in "-_+" or sample in (".", ".."):
            raise ValueError(
                f"{value!r} is not a valid index or data stream name (lowercase; none of "
                '\\ / * ? " < > | , # : or spaces; not starting with - _ +); {stream} is the stream'
            )
        return value

    @model_validator(mode="after")
    def _target_and_auth(self) -> ElasticsearchSinkSettings:
        if self.data_stream is not None and self.index is not None:
            raise ValueError("give either data_stream or index, not both")
        if self.api_key is not None and (self.username is not None or self.password is not None):
            raise ValueError("give either api_key or username + password, not both")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password (or password_file) go together")
        if self.api_key is not None:
            api_key_header(self.api_key.get_secret_value())  # raises a ValueError naming the form
        return self

    @property
    def target(self) -> str:
        """The data stream or index template (``{stream}`` for the audit stream)."""
        default = DEFAULT_ECS_DATA_STREAM if self.format == "ecs" else DEFAULT_DATA_STREAM
        return self.index or self.data_stream or default


def api_key_header(value: str) -> str:
    """``ApiKey <base64 id:key>``. Elastic's create-API-key answer has ``encoded`` (that form);
    ``id:key`` as two parts joined by a colon is encoded here."""
    value = value.strip()
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        decoded = ""
    if ":" in decoded:
        return f"ApiKey {value}"
    if ":" in value:
        return f"ApiKey {base64.b64encode(value.encode()).decode()}"
    raise ValueError(
        "api_key must be the 'encoded' value Elastic returns (base64 of id:api_key), or id:api_key"
    )


def _item_result(item: Any) -> dict[str, Any]:
    """``{"create": {...}}`` -> ``{...}``."""
    if isinstance(item, dict) and len(item) == 1:
        result = next(iter(item.values()))
        if isinstance(result, dict):
            return result
    return {}


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        kind = error.get("type", "error")
        reason = error.get("reason", "")
        cause = error.get("caused_by")
        if isinstance(cause, dict) and cause.get("reason"):
            reason = f"{reason}: {cause.get('type', '')}: {cause['reason']}"
        return f"{kind}: {reason}"
    return str(error)


class ElasticsearchTransport:
    max_in_flight = MAX_IN_FLIGHT

    def __init__(self, settings: ElasticsearchSinkSettings, encoding: Encoding = None) -> None:
        self.settings = settings
        self._document = (
            None if settings.format == "json" else make_document_encoder(settings.format, encoding)
        )
        self._client = HttpClient.for_sink(settings, TIMEOUT, MAX_IN_FLIGHT)
        self._target = StreamTemplate(settings.target)
        self._urls = itertools.cycle(settings.urls)
        self._auth = self._auth_headers()
        self._headers = {**self._auth, "Content-Type": "application/x-ndjson"}
        path = "/_bulk"
        if settings.pipeline is not None:
            path += f"?pipeline={url_quote(settings.pipeline, safe='')}"
        self._bulk_path = path
        self._actions: dict[str, bytes] = {}
        self.conflicts = 0  # items answered 409: already indexed, i.e. re-deliveries

    def _auth_headers(self) -> dict[str, str]:
        s = self.settings
        if s.api_key is not None:
            return {"Authorization": api_key_header(s.api_key.get_secret_value())}
        if s.username is not None and s.password is not None:
            pair = f"{s.username}:{s.password.get_secret_value()}".encode()
            return {"Authorization": f"Basic {base64.b64encode(pair).decode()}"}
        return {}

    def _action(self, stream: str) -> bytes:
        """``{"create":{"_index":"…","_id":"`` for a stream, built once."""
        cached = self._actions.get(stream)
        if cached is None:
            index = orjson.dumps(self._target(stream))
            cached = self._actions[stream] = b'{"create":{"_index":' + index + b',"_id":"'
        return cached

    def encode(self, envelope: Envelope) -> bytes:
        """The action line and the document, each ending in a newline: a dead-lettered event
        can be replayed with ``curl --data-binary @- .../_bulk`` as it stands."""
        event = envelope.event if self._document is None else self._document(envelope.event)
        stamp = record_time(envelope.time_ns).encode()
        if self._document is not None and "@timestamp" in event:  # an ECS document's own time
            document = orjson.dumps(event)
        elif "@timestamp" in event or not event:
            document = orjson.dumps({**event, "@timestamp": stamp.decode()})
        else:
            document = b'{"@timestamp":"' + stamp + b'",' + orjson.dumps(event)[1:]
        action = self._action(envelope.stream) + document_id(envelope.stream, envelope.key).encode()
        return action + b'"}}\n' + document + b"\n"

    async def open(self) -> None:
        warn_if_cleartext(self.settings)
        await self._client.open()

    async def close(self) -> None:
        await self._client.close()

    async def write(self, records: Sequence[Record]) -> WriteResult:
        url = next(self._urls) + self._bulk_path
        body = b"".join(record.payload for record in records)
        response = await self._client.request("POST", url, body=body, headers=self._headers, compress=True)
        if response.status == 200:
            return self._items(response, len(records))
        return self._whole(response, f"POST {url}", len(records))

    def _whole(self, response: HttpResponse, what: str, count: int) -> WriteResult:
        """The request refused as a whole."""
        status = response.status
        detail = f"HTTP {status} {self._reason(response)}".rstrip()
        if is_transient_status(status):
            raise response.transient_error(what)
        if status == 401:
            raise SinkFatalError(f"{what}: {detail}: credentials rejected: fix api_key or username/password")
        if status == 403:
            raise SinkFatalError(f"{what}: {detail}: missing privilege (the reason names it)")
        if status in _FATAL:
            raise SinkFatalError(f"{what}: {detail}: {_FATAL[status].replace('check url', 'check urls')}")
        if 300 <= status < 400:
            location = response.quote(response.headers.get("Location", "?"))
            raise SinkFatalError(f"{what}: HTTP {status} redirect to {location}: set urls to the final one")
        if 400 <= status < 500:  # 413 included: halves until what is refused alone is known
            return WriteResult.bisect(count, detail)
        raise SinkFatalError(f"{what}: {detail}: not an answer the elasticsearch sink understands")

    @staticmethod
    def _reason(response: HttpResponse) -> str:
        try:
            info = orjson.loads(response.body)
        except orjson.JSONDecodeError:
            return response.excerpt()
        error = info.get("error") if isinstance(info, dict) else None
        return response.quote(_error_text(error)) if error is not None else response.excerpt()

    def _items(self, response: HttpResponse, count: int) -> WriteResult:
        try:
            info = orjson.loads(response.body)
        except orjson.JSONDecodeError:
            raise TransientError(f"_bulk answered 200 with no JSON: {response.excerpt()}") from None
        items = info.get("items") if isinstance(info, dict) else None
        if not isinstance(items, list) or len(items) != count:
            got = len(items) if isinstance(items, list) else "no"
            raise TransientError(f"_bulk answered {got} items for {count} actions")
        if info.get("errors") is False:
            return WriteResult()
        rejected: dict[int, str] = {}
        again: list[int] = []
        error: TransientError | None = None
        for index, item in enumerate(items):
            result = _item_result(item)
            status = result.get("status")
            if not isinstance(status, int):
                raise TransientError(f"_bulk item {index} has no status: {quote(str(item))}")
            if 200 <= status < 300:
                continue
            if status == 409:
                self.conflicts += 1
                continue
            reason = response.quote(_error_text(result.get("error")))
            if status == 429 or status >= 500:
                again.append(index)
                error = error or TransientError(f"_bulk item refused with HTTP {status}: {reason}")
                continue
            self._fatal_item(status, reason, result)
            rejected[index] = f"HTTP {status} {reason}"
        return settle_items(count, rejected, again, error)

    def _fatal_item(self, status: int, reason: str, result: dict[str, Any]) -> None:
        """Raise for an item refused because of the configuration (every item would be)."""
        index = result.get("_index", self.settings.target)
        if status in (401, 403):
            raise SinkFatalError(
                f"Elasticsearch refused to write to {index}: HTTP {status} {reason}; grant the privilege "
                f"it names (a writer needs {' and '.join(WRITE_PRIVILEGES)} on the target)"
            )
        if status == 404:
            raise SinkFatalError(
                f"{index} does not exist and cannot be created: HTTP 404 {reason}; create it (or an "
                "index template for it), or check data_stream / index"
            )
        if _MISSING_PIPELINE.search(reason):
            raise SinkFatalError(f"HTTP {status} {reason}; create the ingest pipeline or fix pipeline")

    async def probe(self) -> ProbeResult:
        """``GET /`` on every node (reachable, credentials accepted, which product), then on
        Elasticsearch the write privileges on the target (``_has_privileges``) and the ingest
        pipeline. Sends no event."""
        lines: list[str] = []
        product = ""
        for url in self.settings.urls:
            response = await self._client.request("GET", url + "/", headers=self._auth)
            said = f"GET {url}/: HTTP {response.status}"
            if response.status == 401:
                return ProbeResult(False, f"{said}: credentials rejected: fix api_key or username/password")
            if response.status == 403:
                lines.append(f"{url}: authenticated (GET / needs the monitor privilege; writing does not)")
                continue
            if response.status != 200:
                return ProbeResult(False, f"{said} {self._reason(response)}".rstrip())
            product = self._product(response)
            lines.append(f"{url}: {product}")
        ok, detail = await self._privileges(product)
        lines.append(detail)
        if ok and self.settings.pipeline is not None:
            ok, detail = await self._pipeline()
            lines.append(detail)
        return ProbeResult(ok, "; ".join(lines))

    @staticmethod
    def _product(response: HttpResponse) -> str:
        try:
            version = orjson.loads(response.body).get("version", {})
        except (orjson.JSONDecodeError, AttributeError):
            return "reachable"
        name = "OpenSearch" if version.get("distribution") == "opensearch" else "Elasticsearch"
        return f"{name} {version.get('number', '?')}"

    async def _privileges(self, product: str) -> tuple[bool, str]:
        target = self.settings.target.replace(STREAM_PLACEHOLDER, "*")
        if not self._auth:
            return True, "no credentials configured (security off?)"
        if product.startswith("OpenSearch"):
            return True, f"OpenSearch: write privileges on {target} are tried by the first delivery"
        url = self.settings.urls[0] + "/_security/user/_has_privileges"
        body = orjson.dumps({"index": [{"names": [target], "privileges": list(WRITE_PRIVILEGES)}]})
        headers = {**self._auth, "Content-Type": "application/json"}
        response = await self._client.request("POST", url, body=body, headers=headers)
        if response.status != 200:
            return True, f"privileges not checked (_has_privileges: HTTP {response.status})"
        granted = orjson.loads(response.body).get("index", {}).get(target, {})
        missing = [p for p in WRITE_PRIVILEGES if granted.get(p) is not True]
        if "create_doc" in missing:
            return False, f"missing index privilege create_doc on {target} (needed to write)"
        if missing:
            return True, f"no auto_configure on {target}: the data streams or indices must exist already"
        return True, f"create_doc and auto_configure granted on {target}"

    async def _pipeline(self) -> tuple[bool, str]:
        name = self.settings.pipeline or ""
        url = f"{self.settings.urls[0]}/_ingest/pipeline/{url_quote(name, safe='')}"
        response = await self._client.request("GET", url, headers=self._auth)
        if response.status == 200:
            return True, f"ingest pipeline {name} exists"
        if response.status == 404:
            return False, f"ingest pipeline {name} does not exist: create it or fix pipeline"
        return True, f"ingest pipeline {name} not checked (HTTP {response.status}; needs read_pipeline)"


class ElasticsearchSink(TransportSink):
    transport_class = ElasticsearchTransport
