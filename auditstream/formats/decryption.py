"""Decrypting StrongDM's encrypted query logs with the organisation's private key.

When an organisation sets StrongDM's log encryption to its own RSA public key, the API
returns Query records with ``encrypted = true`` whose text only that key's private half
can read:

- ``query_key``: base64 of a random AES key wrapped with RSA-OAEP (SHA-256, MGF1-SHA-256,
  no label), one per query;
- ``query_body``: base64 of a 16-byte IV followed by the AES-CBC ciphertext of the body,
  zero-padded to the block size (not PKCS#7), so trailing NUL bytes are padding;
- the body is the SQL text of a datasource query, or for SSH, Kubernetes and RDP sessions
  the capture as JSON (``{"type": "shell", "command": ..., "width": 80, ...}``, camelCase
  or snake_case keys) that a plaintext record carries in ``capture``;
- a session's replay chunks (``Replays.List``) carry no events; the chunk's raw ``data``
  decrypts with the same query key and layout to a JSON array
  ``[{"data": "<base64>", "duration": <milliseconds>}, ...]`` (``QueryDecryptor.replay_events``).

Event fields (``decrypt_query_event``, applied to ``queries`` events only; an event whose
``encrypted`` is false is passed on as it is, without these fields):

``decryption``
    ``"decrypted"``: ``queryBody`` holds the plaintext; for a session, ``capture`` is filled
    from the decrypted JSON exactly as for a plaintext record (same names, same credential
    redaction) and ``replayable`` is derived from the capture's type.
    ``"no_key"``: the daemon has no private key configured; the record is exported as
    received (ciphertext in ``queryBody``).
    ``"failed"``: the record could not be decrypted; it is exported as received, with
    ``decryptionError`` saying why.
``decryptionError``
    Only with ``"failed"``: a short reason, e.g. ``"query key does not open with the
    configured private key (wrong key?)"`` or ``"query body is not valid base64"``. It never
    contains key material or plaintext.

A record that fails to decrypt is still delivered (with its ciphertext): losing an audit
record because one field is unreadable would be worse than exporting it flagged.
"""

from __future__ import annotations

import base64
import binascii
from collections import OrderedDict
from pathlib import Path
from typing import Any, Final

import orjson
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from google.protobuf import json_format
from strongdm import queries_pb2
from strongdm.constants import CaptureType

from auditstream.formats import compiled

__all__ = [
    "REPLAYABLE_CAPTURE_TYPES",
    "DecryptionError",
    "KeyFileError",
    "QueryDecryptor",
    "decrypt_query_event",
    "load_private_key",
]

# The wrap of the per-query AES key, as StrongDM does it (and the emulator, emulator.crypto).
OAEP: Final = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
IV_BYTES: Final = 16
BLOCK_BYTES: Final = 16
AES_KEY_BYTES: Final = frozenset({16, 24, 32})
# A PEM key is a few KiB; anything much larger is the wrong file (a log, a disk image).
MAX_KEY_FILE_BYTES: Final = 1 << 20
PASSPHRASE_SETTING: Final = "log_private_key_passphrase_file"

DECRYPTED: Final = "decrypted"
NO_KEY: Final = "no_key"
FAILED: Final = "failed"


# The capture types StrongDM records frame by frame for Replays.List: interactive
# terminals (an SSH shell, kubectl exec with or without a TTY) and RDP screens. Single
# SSH commands, file copies, port forwards and one-shot kubectl verbs are logged as a
# query but leave nothing to play back. An encrypted record's own flag arrives beside a
# capture nobody could read; once it is decrypted, its type decides, by this one rule.
REPLAYABLE_CAPTURE_TYPES: Final = frozenset(
    {
        CaptureType.SHELL,
        CaptureType.K_8_S_EXEC,
        CaptureType.K_8_S_EXEC_TTY,
        CaptureType.RDP_BASIC,
        CaptureType.RDP_ENHANCED,
    }
)


# --- the private key --------------------------------------------------------------------


class KeyFileError(ValueError):
    """The configured private key file cannot be used; the message says why and what to do.

    Raised at start-up, so the operator reads it once, in full. Messages name the file and
    the cause but never quote the file's content or the passphrase.
    """


def load_private_key(path: Path, passphrase: bytes | None = None) -> RSAPrivateKey:
    """The RSA private key in a PEM file: PKCS#1 (``BEGIN RSA PRIVATE KEY``) or PKCS#8, either
    of them plain or passphrase-protected.

    Every failure is a ``KeyFileError`` naming the file, the cause and the fix; the library's
    own messages are not passed on (not all of them are written for operators, and none of
    them is needed to fix the file).
    """
    try:
        with path.open("rb") as f:
            data = f.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        cause = exc.strerror or type(exc).__name__
        raise KeyFileError(
            f"private key file {path}: cannot read it ({cause}); check the path and that the "
            f"daemon's user may read it"
        ) from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyFileError(
            f"private key file {path}: larger than {MAX_KEY_FILE_BYTES // 1024} KiB, so not a PEM "
            f"private key; point the setting at the PEM file of the key whose public half is "
            f"registered with StrongDM"
        )
    key = _parse_pem(path, data, passphrase)
    if not isinstance(key, RSAPrivateKey):
        kind = type(key).__name__.removesuffix("PrivateKey") or "other"
        raise KeyFileError(
            f"private key file {path}: holds a {kind} key, not an RSA key; StrongDM's log "
            f"encryption uses RSA: use the RSA key whose public half is registered with StrongDM"
        )
    return key


def _parse_pem(path: Path, data: bytes, passphrase: bytes | None) -> object:
    if b"-----BEGIN" not in data:
        raise KeyFileError(
            f"private key file {path}: not a PEM file (no -----BEGIN line); expected a PEM "
            f"private key (BEGIN RSA PRIVATE KEY or BEGIN PRIVATE KEY); convert a DER key with "
            f"`openssl pkey -inform DER -in KEY.der -out KEY.pem`"
        )
    if b"BEGIN OPENSSH PRIVATE KEY" in data:
        raise KeyFileError(
            f"private key file {path}: an OpenSSH-format key; convert a copy to PEM with "
            f"`ssh-keygen -p -m PEM -f COPY_OF_KEY`"
        )
    if b"PRIVATE KEY-----" not in data:
        what = "a certificate" if b"BEGIN CERTIFICATE" in data else "not a private key"
        if b"PUBLIC KEY-----" in data:
            what = "a public key"
        raise KeyFileError(
            f"private key file {path}: this PEM file is {what}; decryption needs the PRIVATE key "
            f"(the public key is what StrongDM's log encryption is set to)"
        )
    try:
        return serialization.load_pem_private_key(data, passphrase)
    except TypeError:  # the key is encrypted and no passphrase was given, or the reverse
        failure = "passphrase"
    except (ValueError, UnsupportedAlgorithm):
        failure = "content"
    # The library's messages are replaced (and their tracebacks dropped): ours say what to do.
    # PKCS#8's and PKCS#1's (OpenSSL's "Proc-Type" header) markers of an encrypted key.
    encrypted = b"BEGIN ENCRYPTED PRIVATE KEY" in data or b"Proc-Type: 4,ENCRYPTED" in data
    if failure == "passphrase" and passphrase is None:
        raise KeyFileError(
            f"private key file {path}: the key is encrypted with a passphrase and none was given; "
            f"set {PASSPHRASE_SETTING} to a file holding the passphrase"
        )
    if failure == "passphrase":
        raise KeyFileError(
            f"private key file {path}: a passphrase was given ({PASSPHRASE_SETTING}) but the key "
            f"is not encrypted; remove {PASSPHRASE_SETTING}, or check that this is the right key file"
        )
    if encrypted and passphrase is not None:
        raise KeyFileError(
            f"private key file {path}: the passphrase does not open the key (wrong passphrase, "
            f"or a damaged file); check {PASSPHRASE_SETTING}"
        )
    raise KeyFileError(
        f"private key file {path}: not a readable PEM private key (damaged, truncated, or an "
        f"unsupported format); `openssl pkey -noout -in {path}` shows what is wrong"
    )


# --- decrypting -------------------------------------------------------------------------


class DecryptionError(Exception):
    """One record (or replay chunk) could not be decrypted.

    ``reason`` is short and safe to log and to put in an event: it names what failed, never
    key material or plaintext.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


NO_QUERY_KEY: Final = "the record has no query key"
NO_QUERY_BODY: Final = "the record has no query body"
KEY_NOT_BASE64: Final = "query key is not valid base64"
KEY_WRONG_SIZE: Final = "query key length does not match the configured private key's size (wrong key?)"
KEY_DOES_NOT_OPEN: Final = "query key does not open with the configured private key (wrong key?)"
KEY_NOT_AES: Final = "query key does not unwrap to an AES key"
BODY_NOT_BASE64: Final = "query body is not valid base64"
BODY_TOO_SHORT: Final = "query body is shorter than its IV"
BODY_NOT_ALIGNED: Final = "query body length is not a multiple of the AES block size"
BODY_NOT_UTF8: Final = "query body does not decrypt to UTF-8 text"
REPLAY_TOO_SHORT: Final = "replay chunk data is shorter than its IV"
REPLAY_NOT_ALIGNED: Final = "replay chunk data length is not a multiple of the AES block size"
REPLAY_NOT_JSON: Final = "replay chunk data does not decrypt to JSON"
REPLAY_NOT_EVENTS: Final = "replay chunk data is not a JSON array of {data, duration} events"
REPLAY_EVENT_NOT_BASE64: Final = "replay event data is not valid base64"


def _b64(text: str, reason: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII characters in a str
        raise DecryptionError(reason) from None


class QueryDecryptor:
    """Opens query keys with one private key and decrypts bodies and replay chunks with them.

    Unwrapping a query key is an RSA private-key operation (0.25 ms for 2048 bits, 1.5 ms
    for 4096, ``bench.bench_decrypt``) while the AES part of a record costs microseconds, and
    every chunk of a session's replay reuses the session's key; so opened keys are kept in
    a bounded LRU cache keyed by the ``query_key`` text (``cache_size`` 0: no cache).
    Meant for one event loop or thread: the cache is not locked.
    """

    def __init__(self, private_key: RSAPrivateKey, cache_size: int = 4096) -> None:
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, not {cache_size}")
        self._private_key = private_key
        self._cache_size = cache_size
        self._keys: OrderedDict[str, bytes] = OrderedDict()

    def open_key(self, query_key_b64: str) -> bytes:
        """The AES key of a query, from its ``query_key`` (cached)."""
        keys = self._keys
        key = keys.get(query_key_b64)
        if key is not None:
            keys.move_to_end(query_key_b64)
            return key
        if not query_key_b64:
            raise DecryptionError(NO_QUERY_KEY)
        wrapped = _b64(query_key_b64, KEY_NOT_BASE64)
        if len(wrapped) != (self._private_key.key_size + 7) // 8:
            raise DecryptionError(KEY_WRONG_SIZE)
        try:
            key = self._private_key.decrypt(wrapped, OAEP)
        except ValueError:
            raise DecryptionError(KEY_DOES_NOT_OPEN) from None
        if len(key) not in AES_KEY_BYTES:
            raise DecryptionError(KEY_NOT_AES)
        if self._cache_size:
            keys[query_key_b64] = key
            if len(keys) > self._cache_size:
                keys.popitem(last=False)
        return key

    def decrypt(self, query_key_b64: str, data: bytes) -> bytes:
        """``data`` (16-byte IV + AES-CBC ciphertext) decrypted, trailing NUL padding removed.

        Zero padding cannot tell padding from NULs that ended the plaintext: those are
        removed too. Text bodies and JSON never end in NUL, so nothing real is lost.
        """
        return self._decrypt(query_key_b64, data, BODY_TOO_SHORT, BODY_NOT_ALIGNED)

    def _decrypt(self, query_key_b64: str, data: bytes, too_short: str, not_aligned: str) -> bytes:
        if len(data) < IV_BYTES:
            raise DecryptionError(too_short)
        if len(data) % BLOCK_BYTES:
            raise DecryptionError(not_aligned)
        key = self.open_key(query_key_b64)
        decryptor = Cipher(algorithms.AES(key), modes.CBC(data[:IV_BYTES])).decryptor()
        plain = decryptor.update(data[IV_BYTES:]) + decryptor.finalize()
        return plain.rstrip(b"\0")

    def decrypt_body(self, query_key_b64: str, body_b64: str) -> str:
        """A ``query_body`` (base64) decrypted to its text."""
        if not body_b64:
            raise DecryptionError(NO_QUERY_BODY)
        data = _b64(body_b64, BODY_NOT_BASE64)
        plain = self.decrypt(query_key_b64, data)
        try:
            return plain.decode("utf-8")
        except UnicodeDecodeError:
            raise DecryptionError(BODY_NOT_UTF8) from None

    def replay_events(self, query_key_b64: str, data: bytes) -> list[tuple[bytes, int]]:
        """The ``(event bytes, duration ms)`` of an encrypted replay chunk's raw ``data``.

        A duration given as a JSON float is truncated to whole milliseconds.
        """
        plain = self._decrypt(query_key_b64, data, REPLAY_TOO_SHORT, REPLAY_NOT_ALIGNED)
        try:
            items = orjson.loads(plain)
        except orjson.JSONDecodeError:
            raise DecryptionError(REPLAY_NOT_JSON) from None
        if not isinstance(items, list):
            raise DecryptionError(REPLAY_NOT_EVENTS)
        events: list[tuple[bytes, int]] = []
        for item in items:
            if not isinstance(item, dict):
                raise DecryptionError(REPLAY_NOT_EVENTS)
            text, duration = item.get("data"), item.get("duration", 0)
            if not isinstance(text, str) or isinstance(duration, bool):
                raise DecryptionError(REPLAY_NOT_EVENTS)
            if not isinstance(duration, int | float) or duration != duration:  # also NaN
                raise DecryptionError(REPLAY_NOT_EVENTS)
            events.append((_b64(text, REPLAY_EVENT_NOT_BASE64), int(duration)))
        return events


# --- events -----------------------------------------------------------------------------


def decrypt_query_event(
    event: dict[str, Any], decryptor: QueryDecryptor | None, *, keep_credentials: bool = False
) -> dict[str, Any]:
    """A ``queries`` event with its encrypted body decrypted; see the module docstring.

    The event itself is returned when it is not encrypted; otherwise a copy, flagged with
    ``decryption`` (the input is never modified: it may be shared with other sinks). A body
    that is a session's capture JSON fills ``capture`` through the same converter as a
    plaintext record's capture (``keep_credentials`` as in ``events.to_event``) and
    ``replayable`` from its type (``REPLAYABLE_CAPTURE_TYPES``). Never raises for a bad
    record: a record that does not decrypt is flagged ``failed`` and kept as received.
    """
    if not event.get("encrypted"):
        return event
    out = dict(event)
    if decryptor is None:
        out["decryption"] = NO_KEY
        return out
    query_key, body = event.get("queryKey"), event.get("queryBody")
    try:
        if not isinstance(query_key, str):
            raise DecryptionError(NO_QUERY_KEY)
        if not isinstance(body, str):
            raise DecryptionError(NO_QUERY_BODY)
        plaintext = decryptor.decrypt_body(query_key, body)
    except DecryptionError as exc:
        out["decryption"] = FAILED
        out["decryptionError"] = exc.reason
        return out
    out["queryBody"] = plaintext
    out["decryption"] = DECRYPTED
    capture = _capture(plaintext, keep_credentials)
    if capture is not None:
        out["capture"] = capture
        out["replayable"] = capture.get("type") in REPLAYABLE_CAPTURE_TYPES
    return out


def _capture(plaintext: str, keep_credentials: bool) -> dict[str, Any] | None:
    """The event form of a capture JSON body, None when the body is not one (SQL, say)."""
    if not plaintext.lstrip().startswith("{"):
        return None  # SQL and other text: skip the parse attempt
    try:
        obj = orjson.loads(plaintext)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or "type" not in obj:
        return None
    message = queries_pb2.QueryCapture()
    try:
        # Accepts the JSON names (camelCase) and the field names (snake_case) alike.
        json_format.ParseDict(obj, message, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, AttributeError):
        return None
    convert = compiled.converter_for(queries_pb2.QueryCapture.DESCRIPTOR, keep_credentials=keep_credentials)
    return convert(message)
