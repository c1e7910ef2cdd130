"""What the AWS sinks (s3, cloudwatch_logs) share: settings, one aiobotocore client and error
classification. (Sending one request as several API calls is not AWS's alone: it is
:func:`auditstream.sinks.delivery.send_in_parts`.)

``aiobotocore`` is an optional extra (``pip install 'auditstream[aws]'``): it is imported only
when an AWS sink is configured, so ``auditstream`` works without it, and a config naming an
AWS sink without it fails validation with one line saying how to install it (exit 2).

Credentials come only from the standard AWS chain (environment, shared config and profile,
web identity for EKS IRSA, ECS and EC2 metadata), never from our config, so no AWS secret can
appear in it. botocore's own retries are off: the delivery machinery's retry policy is the
one retry layer, so health, metrics and backoff see every failure. Errors are classified
once, here:

* transient (retried): throttling codes, HTTP 5xx, 408, 429, connection errors and timeouts,
  expired temporary credentials (botocore refreshes them on the next attempt);
* fatal (:class:`SinkFatalError`, data kept, a human acts): missing or rejected credentials,
  a missing permission (named, e.g. ``s3:PutObject``), a wrong region, a missing bucket,
  TLS verification failures, invalid parameters of ours;
* anything else AWS refused is an :class:`AwsRequestError` the sink decides about (the S3
  sink stops on it: S3 never refuses an object for its content; CloudWatch Logs dead-letters
  the events it names).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import field_validator, model_validator

from auditstream import __version__
from auditstream.sinks.base import Envelope, SinkError, SinkFatalError, SinkSettingsBase
from auditstream.sinks.extras import install_hint, installed
from auditstream.sinks.http_client import check_url
from auditstream.sinks.retry import TransientError

INSTALL_HINT = install_hint("aws")
CREDENTIALS_HINT = (
    "the AWS sinks use the standard AWS credential chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
    "AWS_PROFILE, web identity (EKS IRSA), or an ECS task / EC2 instance role"
)
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0

# botocore's standard retry mode treats these codes as throttling; so do we.
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    }
)
TRANSIENT_CODES = frozenset(
    {
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "OperationAborted",
        "OperationAbortedException",
        "BadDigest",  # the body was corrupted on its way: send it again
        "IncompleteBody",
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
        "IDPCommunicationError",
    }
)
CREDENTIAL_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidToken",
        "AuthFailure",
        "MissingAuthenticationToken",
        "IncompleteSignature",
        "InvalidSignatureException",
    }
)
PERMISSION_CODES = frozenset(
    {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "Forbidden", "403"}
)
REGION_CODES = frozenset(
    {"PermanentRedirect", "301", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"}
)

# The IAM action each API call needs, for "missing permission ..." messages.
PERMISSIONS = {
    "HeadBucket": "s3:ListBucket",
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "PutLogEvents": "logs:PutLogEvents",
    "CreateLogGroup": "logs:CreateLogGroup",
    "CreateLogStream": "logs:CreateLogStream",
    "PutRetentionPolicy": "logs:PutRetentionPolicy",
    "DescribeLogStreams": "logs:DescribeLogStreams",
}
_NAMED_ACTION = re.compile(r"perform: ([A-Za-z0-9-]+:[A-Za-z0-9*]+)")


def aws_extra_installed() -> bool:
    return installed("aiobotocore.session")


class AwsSinkSettings(SinkSettingsBase):
    """Keys every AWS sink has: where the service is. Credentials are never configured here."""

    region: str | None = None
    endpoint_url: str | None = None

    @model_validator(mode="after")
    def _aws_ready(self) -> AwsSinkSettings:
        if not aws_extra_installed():
            raise ValueError(f"the {self.type} sink needs the AWS extra: {INSTALL_HINT}")
        tls = self.tls
        if tls.cert_file or tls.key_file or tls.server_name:
            raise ValueError(
                f"the {self.type} sink takes tls.verify and tls.ca_file only (AWS authenticates by signature)"
            )
        return self

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return value if value is None else check_url(value)


class AwsRequestError(SinkError):
    """AWS refused this request for a reason that is neither transient nor a configuration
    error the classifier knows; the sink decides (dead-letter, split, or stop)."""

    def __init__(self, operation: str, code: str, message: str, status: int) -> None:
        super().__init__(f"{operation}: {describe_code(code, status)}: {message}")
        self.operation = operation
        self.code = code
        self.message = message
        self.status = status


def describe_code(code: str, status: int) -> str:
    """``NoSuchBucket (HTTP 404)``; just ``HTTP 404`` when AWS sent no code (HEAD requests)."""
    return f"HTTP {status}" if code in ("", str(status)) else f"{code} (HTTP {status})"


def classify(exc: BaseException, operation: str, what: str, hint: str = "") -> Exception:
    """The exception a failed call becomes: TransientError, SinkFatalError or AwsRequestError.

    ``what`` names the resource (``s3://bucket/key``, ``log group x``) and ``hint`` is added to
    permission errors (e.g. the KMS key an encrypted upload also needs)."""
    from botocore import exceptions as bx

    if isinstance(exc, bx.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "")
        message = str(error.get("Message") or "").strip()
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        said = f"{operation} {what}: {code or status}" + (f": {message}" if message else "")
        if code in THROTTLING_CODES or code in TRANSIENT_CODES or status >= 500 or status in (408, 429):
            return TransientError(said)
        if code in CREDENTIAL_CODES:
            return SinkFatalError(f"{said}; AWS rejected the credentials ({CREDENTIALS_HINT})")
        if code in PERMISSION_CODES or code.startswith("KMS."):
            named = _NAMED_ACTION.search(message)
            action = named.group(1) if named else PERMISSIONS.get(operation, operation)
            extra = f" ({hint})" if hint and not named else ""
            return SinkFatalError(f"{said}; missing permission {action}{extra}")
        if code in REGION_CODES:
            return SinkFatalError(f"{said}; set region to the region of {what}")
        return AwsRequestError(operation, code or str(status), message or "no message", status)
    if isinstance(exc, bx.SSLError):
        return SinkFatalError(
            f"{operation} {what}: TLS verification failed: {exc}; check endpoint_url and tls.ca_file"
        )
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError | bx.CredentialRetrievalError):
        return SinkFatalError(f"{operation} {what}: {exc}; {CREDENTIALS_HINT}")
    if isinstance(exc, bx.NoRegionError):
        return SinkFatalError(f"{operation} {what}: no AWS region; set region (or AWS_REGION)")
    if isinstance(exc, bx.ParamValidationError):
        return SinkFatalError(f"{operation} {what}: invalid parameter: {exc}")
    if isinstance(exc, bx.BotoCoreError | OSError | TimeoutError):
        return TransientError(f"{operation} {what}: {type(exc).__name__}: {exc}")
    if type(exc).__module__.startswith("aiohttp"):
        return TransientError(f"{operation} {what}: {type(exc).__name__}: {exc}")
    return SinkFatalError(f"{operation} {what}: unexpected {type(exc).__name__}: {exc}")


class AwsClient:
    """One aiobotocore client for one sink, opened lazily and closed once.

    ``calls`` counts API calls by operation (the benchmark reports calls per 100,000 events)."""

    def __init__(
        self, service: str, settings: AwsSinkSettings, config: Mapping[str, Any] | None = None
    ) -> None:
        self.service = service
        self.settings = settings
        self.calls: Counter[str] = Counter()
        self._config = dict(config or {})
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None
        self._lock = asyncio.Lock()

    async def _get(self) -> Any:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                self._client = await self._create()
        return self._client

    async def _session(self) -> Any:
        """The aiobotocore session the client is made from: the standard credential chain.

        The one hook for other credentials: a subclass returns a session whose credentials
        are an assumed role's (the security_lake sink's provider role), and keeps everything
        else here (timeouts, retries off, TLS, error classification)."""
        from aiobotocore.session import get_session

        return get_session()

    async def _create(self) -> Any:
        from aiobotocore.config import AioConfig

        settings = self.settings
        config = AioConfig(
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            user_agent_extra=f"auditstream/{__version__}",
            **self._config,
        )
        verify: bool | str = settings.tls.verify
        if settings.tls.verify and settings.tls.ca_file is not None:
            verify = str(settings.tls.ca_file)
        stack = contextlib.AsyncExitStack()
        try:
            session = await self._session()
            client = await stack.enter_async_context(
                session.create_client(
                    self.service,
                    region_name=settings.region,
                    endpoint_url=settings.endpoint_url,
                    config=config,
                    verify=verify,
                )
            )
        except Exception as exc:
            await stack.aclose()
            raise classify(exc, "connect", f"to {self.service}") from None
        self._stack = stack
        return client

    async def call(self, operation: str, what: str, *, hint: str = "", **params: Any) -> dict[str, Any]:
        """Run one API call (``operation`` as AWS names it, e.g. ``PutObject``)."""
        client = await self._get()
        method = getattr(client, _snake(operation))
        self.calls[operation] += 1
        try:
            response: dict[str, Any] = await method(**params)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise classify(exc, operation, what, hint) from None
        return response

    async def close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()


class AwsTransport:
    """What both AWS transports are besides their API calls: an encoder for the events, one
    client, nothing to open (the client connects on its first call), the client to close."""

    max_in_flight = 4  # requests of different streams in flight together

    def __init__(self, encode_event: Callable[[dict[str, Any]], bytes], client: AwsClient) -> None:
        self._encode_event = encode_event
        self.client = client

    def encode(self, envelope: Envelope) -> bytes:
        return self._encode_event(envelope.event)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        await self.client.close()


def _snake(operation: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()
