"""StrongDM request signing, byte for byte as the official SDK does it.

The signature covers the method name and the serialized request, so it is recomputed for
every page (the cursor changes the body). The secret never leaves this module's callers:
only the derived signature goes on the wire.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac

import strongdm.client as sdk_client

from auditstream import __version__

API_VERSION: str = sdk_client.API_VERSION
USER_AGENT: str = f"auditstream/{__version__} ({sdk_client.USER_AGENT})"

HEADER_ACCESS_KEY = "x-sdm-authentication"
HEADER_SIGNATURE = "x-sdm-signature"
HEADER_API_VERSION = "x-sdm-api-version"
HEADER_USER_AGENT = "x-sdm-user-agent"


def decode_secret(secret_key: str) -> bytes:
    """The SDK's secret keys are base64; raise ValueError (without echoing it) otherwise."""
    try:
        return base64.b64decode(secret_key.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            "the secret key is not valid base64 (it should be the key StrongDM showed once)"
        ) from None


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def signing_key(secret: bytes, day: dt.date) -> bytes:
    """The per-day key; both sides derive it from the UTC date."""
    return _hmac(_hmac(secret, day.strftime("%Y-%m-%d").encode()), b"sdm_api_v1")


def sign(secret: bytes, method_name: str, request_bytes: bytes, day: dt.date | None = None) -> str:
    """``method_name`` is ``"<Service>.<Method>"`` without the package, e.g. ``Activities.List``."""
    if day is None:
        day = dt.datetime.now(dt.UTC).date()
    digest = hashlib.sha256(method_name.encode() + b"\n" + request_bytes).digest()
    return base64.b64encode(_hmac(signing_key(secret, day), digest)).decode()


def request_metadata(
    access_key: str, secret: bytes, method_name: str, request_bytes: bytes
) -> tuple[tuple[str, str], ...]:
    return (
        (HEADER_ACCESS_KEY, access_key),
        (HEADER_SIGNATURE, sign(secret, method_name, request_bytes)),
        (HEADER_API_VERSION, API_VERSION),
        (HEADER_USER_AGENT, USER_AGENT),
    )


def verify(
    secret: bytes, method_name: str, request_bytes: bytes, signature: str, today: dt.date | None = None
) -> bool:
    """Accept yesterday's, today's and tomorrow's date, as clocks drift around midnight."""
    if today is None:
        today = dt.datetime.now(dt.UTC).date()
    for offset in (0, -1, 1):
        expected = sign(secret, method_name, request_bytes, today + dt.timedelta(days=offset))
        if hmac.compare_digest(expected, signature):
            return True
    return False
