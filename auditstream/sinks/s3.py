"""Amazon S3 (and S3-compatible stores): one NDJSON object per stream and hour of each batch.

Layout (Hive-style partitions by record time, UTC, so Athena, Glue and Security Lake prune)::

    <prefix>/<stream>/year=YYYY/month=MM/day=DD/hour=HH/<first-record-time>-<batch-id>.jsonl.gz

One event per line (``format = "cef"`` writes CEF lines and ``.cef`` names), gzip unless
``compression = "none"``. A request of the delivery machinery holds the events of several
streams and maybe several hours; it becomes one object per (stream, hour), uploaded
concurrently (:func:`~auditstream.sinks.delivery.send_in_parts`).

Why the name is derived from the content: ``batch-id`` is a hash of the stream and its
records' keys, and ``first-record-time`` is the earliest record's time, so sending the same
records again (a retry after a lost answer, or the engine re-sending after a fatal error)
writes the same key: the object is overwritten, never duplicated. The gzip stream carries
no timestamp, so the same records give the same bytes.

Delivery: an object is acknowledged only when S3 answered 200 for all of it: ``PutObject``
up to 8 MiB, above that a multipart upload of 8 MiB parts whose ``CompleteMultipartUpload``
must succeed (botocore turns a 200 carrying an error into an error); a failed multipart
upload is aborted. Every PutObject and UploadPart carries ``Content-MD5``, so S3 refuses a
body corrupted on the way (BadDigest, retried). Throttling (SlowDown), 5xx and connection
errors are retried by the shared policy; a missing bucket, wrong region, rejected
credentials or a missing permission (named: ``s3:PutObject``, ``kms:GenerateDataKey``) stop
the sink with the data kept. S3 does not judge an object's content, so any other refusal is
a configuration error too (storage class, encryption settings) and stops the sink.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import gzip
import hashlib
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from auditstream.formats import Encoding, make_line_encoder
from auditstream.sinks.aws import (
    AwsClient,
    AwsRequestError,
    AwsSinkSettings,
    AwsTransport,
    describe_code,
)
from auditstream.sinks.base import BatchSettings, ProbeResult, SinkFatalError
from auditstream.sinks.delivery import Record, TransportSink, WriteResult, send_in_parts
from auditstream.sinks.retry import TransientError

MIB = 1024 * 1024
MULTIPART_ABOVE = 8 * MIB
PART_SIZE = 8 * MIB
UPLOADS_AT_ONCE = 4  # objects of one request uploaded concurrently
CHECK_DIRECTORY = ".auditstream-check"
_GZIP_IN_THREAD_ABOVE = 256 * 1024
StorageClass = Literal[
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "GLACIER_IR",
    "OUTPOSTS",
    "SNOW",
    "EXPRESS_ONEZONE",
]


class S3BatchSettings(BatchSettings):
    """Sized for objects, not HTTP requests: up to 64 MiB of (uncompressed) events or
    100,000 events per object.

    ``max_age`` stays 0 by default, as everywhere: the engine waits for a stream's batch to be
    acknowledged before handing over its next page, so a batch never grows past what the
    streams have in flight at once (about one page per stream); waiting would add latency
    and slow a backfill to one page per stream per ``max_age`` without making objects bigger.
    Larger objects come from a larger ``[source] page_size``."""

    max_events: int = Field(default=100_000, ge=1)
    max_bytes: int = Field(default=64 * MIB, ge=1024)


class S3SinkSettings(AwsSinkSettings):
    type: Literal["s3"] = "s3"
    bucket: str = Field(min_length=3, max_length=63)
    prefix: str = ""
    force_path_style: bool = False
    compression: Literal["gzip", "none"] = "gzip"
    server_side_encryption: Literal["AES256", "aws:kms"] | None = None
    kms_key_id: str | None = None
    storage_class: StorageClass | None = None
    batch: S3BatchSettings = Field(default_factory=S3BatchSettings)

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, value: str) -> str:
        if "/" in value or value.startswith("s3:") or value != value.strip():
            raise ValueError(f"{value!r} is not a bucket name (give the name only; prefix takes the path)")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return value.strip("/")

    @model_validator(mode="after")
    def _kms_key_with_kms(self) -> S3SinkSettings:
        if self.kms_key_id is not None and self.server_side_encryption != "aws:kms":
            raise ValueError('kms_key_id needs server_side_encryption = "aws:kms"')
        return self


def object_key(settings: S3SinkSettings, stream: str, records: Sequence[Record]) -> str:
    """Where ``records`` (one stream, one hour) go: the same records always get the same key."""
    first_ns = min(record.envelope.time_ns for record in records)
    first = dt.datetime.fromtimestamp(first_ns // 1_000_000_000, dt.UTC)
    digest = hashlib.sha256(stream.encode())
    for record in records:
        digest.update(b"\n" + record.envelope.key.encode())
    extension = ".cef" if settings.format == "cef" else ".jsonl"
    if settings.compression == "gzip":
        extension += ".gz"
    partition = f"year={first:%Y}/month={first:%m}/day={first:%d}/hour={first:%H}"
    name = f"{first:%Y%m%dT%H%M%SZ}-{digest.hexdigest()[:20]}{extension}"
    return "/".join(part for part in (settings.prefix, stream, partition, name) if part)


def partitions(records: Sequence[Record]) -> list[list[int]]:
    """The request's indexes grouped by (stream, UTC hour of the record), in request order."""
    groups: dict[tuple[str, int], list[int]] = {}
    for index, record in enumerate(records):
        hour = record.envelope.time_ns // 3_600_000_000_000
        groups.setdefault((record.envelope.stream, hour), []).append(index)
    return list(groups.values())


def _md5(data: bytes | memoryview) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


class ObjectUploads:
    """Objects into one bucket, acknowledged only once S3 has all of each: ``PutObject`` up to
    8 MiB, a multipart upload of 8 MiB parts above (aborted if it fails), ``Content-MD5`` on
    every body. An answer refusing the upload becomes a :class:`SinkFatalError` worded by
    ``explain`` (the caller knows which settings to name); a :class:`TransientError` passes
    through to the retry policy. The S3 and Security Lake sinks both upload through it."""

    def __init__(
        self,
        client: AwsClient,
        bucket: str,
        put_params: dict[str, Any],
        explain: Callable[[AwsRequestError, str], str],
        kms_hint: str = "",
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.put_params = put_params
        self._explain = explain
        self._kms_hint = kms_hint

    async def upload(self, key: str, body: bytes, **params: Any) -> None:
        """``params`` add to (or override) the object's ``put_params``."""
        params = {**self.put_params, **params}
        if len(body) > MULTIPART_ABOVE:
            await self._multipart(key, body, params)
        else:
            await self.call("PutObject", key, Body=body, ContentMD5=_md5(body), **params)

    async def call(self, operation: str, key: str, **params: Any) -> dict[str, Any]:
        where = f"s3://{self.bucket}/{key}"
        hint = self._kms_hint
        if hint and operation in ("UploadPart", "CompleteMultipartUpload"):
            hint += " (multipart uploads need kms:Decrypt too)"
        try:
            return await self.client.call(operation, where, hint=hint, Bucket=self.bucket, Key=key, **params)
        except AwsRequestError as exc:
            raise SinkFatalError(self._explain(exc, where)) from None

    async def _multipart(self, key: str, body: bytes, params: dict[str, Any]) -> None:
        created = await self.call("CreateMultipartUpload", key, **params)
        upload_id = created["UploadId"]
        view = memoryview(body)
        try:
            parts = []
            for number, start in enumerate(range(0, len(body), PART_SIZE), start=1):
                chunk = view[start : start + PART_SIZE]
                answer = await self.call(
                    "UploadPart",
                    key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=bytes(chunk),
                    ContentMD5=_md5(chunk),
                )
                parts.append({"PartNumber": number, "ETag": answer["ETag"]})
            await self.call(
                "CompleteMultipartUpload", key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except Exception:
            # Best effort (a retry re-uploads anyway): an upload left open costs storage until
            # a lifecycle rule (AbortIncompleteMultipartUpload) removes it.
            with contextlib.suppress(TransientError, SinkFatalError):
                await self.call("AbortMultipartUpload", key, UploadId=upload_id)
            raise


def s3_client_config(force_path_style: bool) -> dict[str, Any]:
    """Path-style addressing on request, and Content-MD5 as the integrity check: botocore's
    newer default checksums (CRC32 trailers) are not understood by every S3-compatible store."""
    return {
        "s3": {"addressing_style": "path" if force_path_style else "auto"},
        "request_checksum_calculation": "when_required",
    }


class S3Transport(AwsTransport):
    def __init__(self, settings: S3SinkSettings, encoding: Encoding) -> None:
        self.settings = settings
        client = AwsClient("s3", settings, s3_client_config(settings.force_path_style))
        super().__init__(make_line_encoder(settings.format, encoding), client)
        kms_hint = (
            f"and kms:GenerateDataKey on {settings.kms_key_id or 'the bucket key'}, "
            'since server_side_encryption = "aws:kms"'
            if settings.server_side_encryption == "aws:kms"
            else ""
        )
        self.objects = ObjectUploads(client, settings.bucket, self._object_params(), self._explain, kms_hint)

    def _object_params(self) -> dict[str, Any]:
        s = self.settings
        params: dict[str, Any] = {
            "ContentType": "text/plain; charset=utf-8" if s.format == "cef" else "application/x-ndjson"
        }
        if s.compression == "gzip":
            params["ContentType"] = "application/gzip"
        if s.server_side_encryption is not None:
            params["ServerSideEncryption"] = s.server_side_encryption
        if s.kms_key_id is not None:
            params["SSEKMSKeyId"] = s.kms_key_id
        if s.storage_class is not None:
            params["StorageClass"] = s.storage_class
        return params

    async def write(self, records: Sequence[Record]) -> WriteResult:
        async def upload(indexes: Sequence[int]) -> WriteResult:
            group = [records[i] for i in indexes]
            await self.put(object_key(self.settings, group[0].envelope.stream, group), group)
            return WriteResult()

        return await send_in_parts(partitions(records), upload, UPLOADS_AT_ONCE)

    async def put(self, key: str, records: Sequence[Record]) -> None:
        body = b"".join(record.payload for record in records)
        if self.settings.compression == "gzip":
            if len(body) > _GZIP_IN_THREAD_ABOVE:
                body = await asyncio.to_thread(gzip.compress, body, 6, mtime=0)
            else:
                body = gzip.compress(body, 6, mtime=0)
        await self.objects.upload(key, body)

    def _explain(self, exc: AwsRequestError, where: str) -> str:
        fixes = {
            "NoSuchBucket": "create the bucket, or fix the bucket setting",
            "404": "create the bucket, or fix the bucket setting",
            "InvalidStorageClass": "fix storage_class",
            "KMS.NotFoundException": "fix kms_key_id",
        }
        fix = fixes.get(
            exc.code, "check bucket, prefix, server_side_encryption, kms_key_id and storage_class"
        )
        return f"{exc.operation} {where}: {describe_code(exc.code, exc.status)}: {exc.message}; {fix}"

    async def probe(self) -> ProbeResult:
        """HeadBucket, then a small PutObject under ``<prefix>/.auditstream-check/`` with this
        sink's encryption and storage class, so the permissions a delivery needs are tried."""
        bucket = self.settings.bucket
        try:
            await self.client.call("HeadBucket", f"s3://{bucket}", Bucket=bucket)
        except AwsRequestError as exc:
            return ProbeResult(False, self._explain(exc, f"s3://{bucket}"))
        except TransientError as exc:
            return ProbeResult(False, f"{exc} (S3 unreachable or busy; check endpoint_url and region)")
        key = "/".join(p for p in (self.settings.prefix, CHECK_DIRECTORY, self.settings.name) if p)
        body = f"auditstream check {dt.datetime.now(dt.UTC).isoformat()}\n".encode()
        try:
            await self.objects.upload(key, body, ContentType="text/plain; charset=utf-8")
        except TransientError as exc:
            return ProbeResult(False, str(exc))
        return ProbeResult(True, f"bucket {bucket} reachable; test object s3://{bucket}/{key} written")


class S3Sink(TransportSink):
    transport_class = S3Transport
