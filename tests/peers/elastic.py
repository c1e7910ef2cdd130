"""An Elasticsearch / OpenSearch stand-in for ``_bulk``, strict to the reference:

* Bulk API, https://www.elastic.co/guide/en/elasticsearch/reference/current/docs-bulk.html :
  ``POST /_bulk`` (``?pipeline=``), NDJSON of action and source lines, ``Content-Type:
  application/x-ndjson`` (406 for a type it does not take), the last line ending in a newline
  (400 otherwise), ``Content-Encoding: gzip`` taken; ``create`` refuses an existing ``_id``
  per item with 409 ``version_conflict_engine_exception``; the answer is 200 with ``errors``
  and one item per action, in order, each with its ``status`` and, when refused, ``error``
  (``type``, ``reason``); a body over ``http.max_content_length`` is refused whole with 413.
* Data streams, https://www.elastic.co/guide/en/elasticsearch/reference/current/data-streams.html :
  a target matching ``data_stream_patterns`` (the built-in ``logs-*-*`` template) takes only
  ``create`` (400 ``illegal_argument_exception`` otherwise) and each document needs a
  ``@timestamp`` that parses as a date (400 per item otherwise). Documents go to the data
  stream's write index, its newest backing index ``.ds-<name>-<yyyy.MM.dd>-<generation>``,
  named in each item's ``_index``; ``rollover(name)`` adds a generation (as ILM or the data
  stream lifecycle do), and ``create`` answers 409 only for an ``_id`` in the write index.
* Security, https://www.elastic.co/guide/en/elasticsearch/reference/current/security-api-has-privileges.html
  and the API key docs: ``Authorization: ApiKey <base64 id:key>`` or ``Basic``; 401
  ``security_exception`` otherwise; a principal without ``create_doc`` gets a 403 item naming
  the privileges that grant the action; ``POST /_security/user/_has_privileges`` answers for
  the caller; ``GET /`` returns the version (with ``X-Elastic-Product: Elasticsearch``, or as
  OpenSearch with ``version.distribution``), ``GET /_ingest/pipeline/<id>`` 200 or 404, and
  ``?pipeline=`` naming a missing pipeline refuses each item with 400.

Fault switches: ``faults`` (whole-request statuses), ``item_faults`` (statuses given to the
next items: 429 ``es_rejected_execution_exception``, 503 ``unavailable_shards_exception``),
``reject_when`` (a document predicate answered 400 ``document_parsing_exception``),
``closed`` (indices or data streams closed: every item for them is refused with 400
``index_closed_exception``, as the Close index API makes them answer).
Indexed documents are in ``docs`` keyed by (index or data stream, _id), the latest copy;
``indexed`` lists every creation as (index or data stream, concrete index, _id), so a record
indexed twice (in two backing indices) shows there twice; ``conflicts`` counts 409s.
"""

from __future__ import annotations

import base64
import datetime as dt
import fnmatch
import json
from collections import deque
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.peers.base import AiohttpPeer

WRITE_PRIVILEGES = {"create_doc", "create", "index", "write", "all"}
NDJSON_TYPES = {"application/x-ndjson", "application/json"}
ITEM_ERRORS = {
    429: ("es_rejected_execution_exception", "rejected execution of coordinating operation"),
    503: ("unavailable_shards_exception", "primary shard is not active"),
    500: ("internal_server_error", "injected"),
}


def _error(status: int, kind: str, reason: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason}}
    return web.json_response({**body, "status": status}, status=status, headers=headers)


def _parses_as_date(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


class ElasticReceiver(AiohttpPeer):
    def __init__(
        self,
        *,
        api_keys: dict[str, str] | None = None,
        users: dict[str, str] | None = None,
        flavor: str = "elasticsearch",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.api_keys = dict(api_keys or {})  # id -> key
        self.users = dict(users or {})
        self.flavor = flavor
        self.privileges: dict[str, set[str]] = {}  # principal -> index privileges (default: all)
        self.data_stream_patterns = ["logs-*-*"]
        self.pipelines: set[str] = set()
        self.max_content_length = 100 * 1024 * 1024
        self.item_faults: deque[int] = deque()
        self.closed: set[str] = set()
        self.generations: dict[str, int] = {}  # data stream -> its write index's generation
        self.indexed: list[tuple[str, str, str]] = []  # (target, concrete index, _id) per creation
        self._ids: set[tuple[str, str]] = set()  # (concrete index, _id)
        self.reject_when: Callable[[dict[str, Any]], bool] | None = None
        self.docs: dict[tuple[str, str], dict[str, Any]] = {}
        self.conflicts = 0
        self.item_refusals = 0
        self.bulk_sizes: list[int] = []  # actions per accepted _bulk request
        self.gzip_requests = 0

    @property
    def security(self) -> bool:
        return bool(self.api_keys or self.users)

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_content_length + 1024)
        app.router.add_get("/", self._root)
        app.router.add_post("/_bulk", self._bulk)
        app.router.add_post("/{target}/_bulk", self._bulk)
        app.router.add_post("/_security/user/_has_privileges", self._has_privileges)
        app.router.add_get("/_ingest/pipeline/{id}", self._pipeline)
        return app

    def _principal(self, request: web.Request) -> tuple[str | None, web.Response | None]:
        if not self.security:
            return "anonymous", None
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except ValueError:
            decoded = ""
        name, _, secret = decoded.partition(":")
        if scheme == "ApiKey" and self.api_keys.get(name) == secret and secret:
            return f"api_key:{name}", None
        if scheme == "Basic" and self.users.get(name) == secret and secret:
            return f"user:{name}", None
        reason = "unable to authenticate with provided credentials and anonymous access is not allowed"
        headers = {"WWW-Authenticate": 'ApiKey, Basic realm="security" charset="UTF-8"'}
        return None, _error(401, "security_exception", reason, headers)

    def _granted(self, principal: str) -> set[str]:
        return self.privileges.get(principal, {"all"})

    def _headers(self) -> dict[str, str]:
        return {"X-Elastic-Product": "Elasticsearch"} if self.flavor == "elasticsearch" else {}

    async def _root(self, request: web.Request) -> web.Response:
        _, error = self._principal(request)
        if error is not None:
            return error
        if self.flavor == "opensearch":
            version = {"distribution": "opensearch", "number": "2.11.0"}
        else:
            version = {"number": "8.13.4", "build_flavor": "default"}
        body = {
            "name": "node-1",
            "cluster_name": "audit",
            "version": version,
            "tagline": "You Know, for Search",
        }
        return web.json_response(body, headers=self._headers())

    async def _pipeline(self, request: web.Request) -> web.Response:
        _, error = self._principal(request)
        if error is not None:
            return error
        name = request.match_info["id"]
        if name not in self.pipelines:
            return web.json_response({}, status=404)
        return web.json_response({name: {"processors": []}})

    async def _has_privileges(self, request: web.Request) -> web.Response:
        if self.flavor == "opensearch" or not self.security:
            return _error(400, "illegal_argument_exception", "no handler found for uri")
        principal, error = self._principal(request)
        if error is not None or principal is None:
            return error or web.Response(status=500)
        asked = await request.json()
        granted = self._granted(principal)
        index: dict[str, dict[str, bool]] = {}
        for entry in asked.get("index", []):
            for name in entry["names"]:
                index[name] = {p: bool({p, "all", "write"} & granted) for p in entry["privileges"]}
        everything = all(v for privileges in index.values() for v in privileges.values())
        answer = {"username": principal, "has_all_requested": everything, "cluster": {}, "index": index}
        return web.json_response(answer)

    def _is_data_stream(self, index: str) -> bool:
        return any(fnmatch.fnmatchcase(index, pattern) for pattern in self.data_stream_patterns)

    def write_index(self, target: str) -> str:
        """The concrete index a write to ``target`` goes to: a data stream's newest backing index."""
        if not self._is_data_stream(target):
            return target
        generation = self.generations.setdefault(target, 1)
        return f".ds-{target}-2024.05.01-{generation:06d}"

    def rollover(self, data_stream: str) -> str:
        """A new write index for ``data_stream`` (ILM or the data stream lifecycle rolled it over)."""
        self.generations[data_stream] = self.generations.get(data_stream, 1) + 1
        return self.write_index(data_stream)

    async def _bulk(self, request: web.Request) -> web.Response:
        self.attempts += 1
        await self.slow_down()
        principal, error = self._principal(request)
        if error is not None or principal is None:
            return error or web.Response(status=500)
        if (status := self.faults.next_failure()) is not None:
            kind = "circuit_breaking_exception" if status == 429 else "injected_failure"
            return _error(status, kind, "injected", self.failure_headers())
        if request.content_type not in NDJSON_TYPES:
            reason = f"Content-Type header [{request.content_type}] is not supported"
            return web.json_response({"error": reason, "status": 406}, status=406)
        if request.headers.get("Content-Encoding") == "gzip":
            self.gzip_requests += 1
        body = await request.read()
        if len(body) > self.max_content_length:
            return web.Response(status=413)
        text = body.decode("utf-8")
        if not text.endswith("\n"):
            return _error(
                400, "illegal_argument_exception", "The bulk request must be terminated by a newline [\\n]"
            )
        lines = text[:-1].split("\n")
        if len(lines) % 2:
            return _error(400, "illegal_argument_exception", "Malformed action/metadata line: no source")
        items = []
        pipeline = request.query.get("pipeline")
        default_index = request.match_info.get("target")
        for number in range(0, len(lines), 2):
            try:
                action = json.loads(lines[number])
                source = json.loads(lines[number + 1])
            except ValueError:
                return _error(400, "x_content_parse_exception", f"line [{number + 1}]: not JSON")
            if not isinstance(action, dict) or len(action) != 1:
                return _error(
                    400, "illegal_argument_exception", f"Malformed action/metadata line [{number + 1}]"
                )
            ((op, meta),) = action.items()
            items.append({op: self._one(op, meta, source, default_index, pipeline, principal)})
        errors = any(next(iter(item.values()))["status"] >= 300 for item in items)
        self.bulk_sizes.append(len(items))
        return web.json_response({"took": 3, "errors": errors, "items": items}, headers=self._headers())

    def _one(
        self,
        op: str,
        meta: dict[str, Any],
        source: Any,
        default_index: str | None,
        pipeline: str | None,
        principal: str,
    ) -> dict[str, Any]:
        index = meta.get("_index") or default_index or ""
        doc_id = meta.get("_id", "")
        result: dict[str, Any] = {"_index": index, "_id": doc_id}

        def refuse(status: int, kind: str, reason: str) -> dict[str, Any]:
            self.item_refusals += 1
            return {**result, "status": status, "error": {"type": kind, "reason": reason, "index": index}}

        if op not in ("create", "index"):
            return refuse(400, "illegal_argument_exception", f"unsupported action [{op}]")
        if not WRITE_PRIVILEGES & self._granted(principal):
            reason = (
                f"action [indices:data/write/bulk[s]] is unauthorized for {principal} on indices [{index}], "
                "this action is granted by the index privileges [create_doc,create,index,write,all]"
            )
            return refuse(403, "security_exception", reason)
        if index in self.closed:
            return refuse(400, "index_closed_exception", "closed")
        if pipeline is not None and pipeline not in self.pipelines:
            return refuse(400, "illegal_argument_exception", f"pipeline with id [{pipeline}] does not exist")
        if self.item_faults:
            status = self.item_faults.popleft()
            kind, reason = ITEM_ERRORS.get(status, ("injected", "injected"))
            return refuse(status, kind, reason)
        if not isinstance(source, dict):
            return refuse(400, "document_parsing_exception", "source is not an object")
        if self._is_data_stream(index):
            if op != "create":
                return refuse(
                    400,
                    "illegal_argument_exception",
                    "only write ops with an op_type of create are allowed in data streams",
                )
            if "@timestamp" not in source:
                return refuse(
                    400, "document_parsing_exception", "data stream timestamp field [@timestamp] is missing"
                )
            if not _parses_as_date(source["@timestamp"]):
                return refuse(
                    400, "document_parsing_exception", "failed to parse field [@timestamp] of type [date]"
                )
        if self.reject_when is not None and self.reject_when(source):
            return refuse(400, "document_parsing_exception", "[1:2] failed to parse: poison document")
        concrete = self.write_index(index)
        result["_index"] = concrete
        if op == "create" and (concrete, doc_id) in self._ids:
            self.conflicts += 1
            reason = f"[{doc_id}]: version conflict, document already exists (current version [1])"
            return {
                **result,
                "status": 409,
                "error": {"type": "version_conflict_engine_exception", "reason": reason},
            }
        self.docs[(index, doc_id)] = source
        self._ids.add((concrete, doc_id))
        self.indexed.append((index, concrete, doc_id))
        return {**result, "_version": 1, "result": "created", "status": 201}
