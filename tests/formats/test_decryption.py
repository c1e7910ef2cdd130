"""Encrypted query logs: the emulator's encryptor, the daemon's decryptor, and an oracle.

The oracle below is written from StrongDM's documented scheme with ``cryptography``'s
primitives and shares no code with ``auditstream.formats.decryption`` or
``auditstream.emulator.crypto``: both are checked against it in each direction, so a
mistake made identically on both sides (a wrong hash in OAEP, PKCS#7 instead of zero
padding, IV after the ciphertext) still fails here.
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import os
import random
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditstream.emulator.crypto import QueryEncryptor, generate_private_key, private_key_pem
from auditstream.formats import compiled, decryption
from auditstream.formats.decryption import (
    REPLAYABLE_CAPTURE_TYPES,
    DecryptionError,
    KeyFileError,
    QueryDecryptor,
    decrypt_query_event,
    load_private_key,
)
from auditstream.formats.events import to_event
from auditstream.sdm.registry import STREAMS

# --- the oracle: StrongDM's scheme, from its description --------------------------------


def _oaep() -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def oracle_unwrap(private_key: rsa.RSAPrivateKey, query_key_b64: str) -> bytes:
    return private_key.decrypt(base64.b64decode(query_key_b64), _oaep())


def oracle_decrypt(aes_key: bytes, data: bytes) -> bytes:
    iv, ciphertext = data[:16], data[16:]
    decryptor = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).decryptor()
    return (decryptor.update(ciphertext) + decryptor.finalize()).rstrip(b"\x00")


def oracle_encrypt(
    public_key: rsa.RSAPublicKey, plaintext: bytes, *, full_block_when_aligned: bool = False
) -> tuple[str, bytes]:
    """(query_key, IV + ciphertext); optionally pads an aligned plaintext with a whole block of
    NULs, as some zero-padding implementations do (the reader must take both)."""
    aes_key, iv = os.urandom(32), os.urandom(16)
    pad = 16 - len(plaintext) % 16
    if pad == 16 and not full_block_when_aligned:
        pad = 0
    encryptor = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).encryptor()
    data = iv + encryptor.update(plaintext + b"\x00" * pad) + encryptor.finalize()
    return base64.b64encode(public_key.encrypt(aes_key, _oaep())).decode(), data


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- keys, made once (RSA key generation costs up to a second) ---------------------------


@functools.cache
def rsa_key(name: str, bits: int = 2048) -> rsa.RSAPrivateKey:
    return generate_private_key(bits)


def key() -> rsa.RSAPrivateKey:
    return rsa_key("org")


def encryptor(seed: int | None = 7) -> QueryEncryptor:
    return QueryEncryptor(key().public_key(), None if seed is None else random.Random(seed))


class CountingKey:
    """An RSA private key that counts its private-key operations (the cache's cost)."""

    def __init__(self, inner: rsa.RSAPrivateKey) -> None:
        self.inner = inner
        self.key_size = inner.key_size
        self.decrypts = 0

    def decrypt(self, ciphertext: bytes, pad: padding.AsymmetricPadding) -> bytes:
        self.decrypts += 1
        return self.inner.decrypt(ciphertext, pad)


PLAINTEXTS = [
    "",
    "SELECT 1",
    "x" * 15,
    "y" * 16,
    "z" * 17,
    "SELECT * FROM users WHERE name = 'Zoë' -- ünïcödé, 日本語, 🙂",
    "a\x00b",  # a NUL inside the text is kept
    "line one\nline two\r\n\ttab",
    "q" * 10_000,
]


# --- the encryptor and the decryptor against the oracle ----------------------------------


@pytest.mark.parametrize("plaintext", PLAINTEXTS)
def test_the_oracle_reads_what_the_emulator_writes(plaintext: str) -> None:
    enc = encryptor()
    aes_key, query_key = enc.new_query_key()
    assert len(aes_key) == 32
    assert oracle_unwrap(key(), query_key) == aes_key
    body = enc.encrypt_body(aes_key, plaintext)
    data = base64.b64decode(body, validate=True)
    assert len(data) == 16 + -(-len(plaintext.encode()) // 16) * 16  # IV + minimal zero padding
    assert oracle_decrypt(aes_key, data) == plaintext.encode()


@pytest.mark.parametrize("plaintext", PLAINTEXTS)
@pytest.mark.parametrize("full_block", [False, True])
def test_the_decryptor_reads_what_the_oracle_writes(plaintext: str, full_block: bool) -> None:
    query_key, data = oracle_encrypt(
        key().public_key(), plaintext.encode(), full_block_when_aligned=full_block
    )
    dec = QueryDecryptor(key())
    assert dec.decrypt_body(query_key, b64(data)) == plaintext
    assert dec.decrypt(query_key, data) == plaintext.encode()
    assert dec.open_key(query_key) == oracle_unwrap(key(), query_key)


def test_trailing_nuls_of_the_plaintext_cannot_be_told_from_padding() -> None:
    """Zero padding's one ambiguity, pinned: NULs ending the plaintext go with the padding,
    NULs inside it stay. Text and JSON bodies never end in NUL, so no real body loses any."""
    query_key, data = oracle_encrypt(key().public_key(), b"abc\x00\x00")
    assert QueryDecryptor(key()).decrypt(query_key, data) == b"abc"
    query_key, data = oracle_encrypt(key().public_key(), b"\x00a\x00\x00b")
    assert QueryDecryptor(key()).decrypt(query_key, data) == b"\x00a\x00\x00b"
    query_key, data = oracle_encrypt(key().public_key(), b"\x00" * 16)
    assert QueryDecryptor(key()).decrypt(query_key, data) == b""


def test_a_seeded_encryptor_repeats_its_aes_keys_and_ivs() -> None:
    """Data sets stay reproducible: only the RSA wrap (randomized by OAEP itself) differs."""
    first, second = encryptor(seed=42), encryptor(seed=42)
    (key1, wrap1), (key2, wrap2) = first.new_query_key(), second.new_query_key()
    assert key1 == key2 and wrap1 != wrap2
    assert first.encrypt_body(key1, "SELECT 1") == second.encrypt_body(key2, "SELECT 1")
    assert encryptor(seed=None).new_query_key()[0] != encryptor(seed=None).new_query_key()[0]


# Text as it can come back: zero padding drops trailing NULs, so none are generated there.
_texts = st.text().filter(lambda s: not s.endswith("\x00"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plaintext=_texts, seed=st.integers(min_value=0, max_value=2**32))
def test_round_trip_over_arbitrary_text(plaintext: str, seed: int) -> None:
    enc = encryptor(seed)
    aes_key, query_key = enc.new_query_key()
    body = enc.encrypt_body(aes_key, plaintext)
    dec = QueryDecryptor(key())
    assert dec.decrypt_body(query_key, body) == plaintext
    assert oracle_decrypt(oracle_unwrap(key(), query_key), base64.b64decode(body)).decode() == plaintext
    oracle_key, data = oracle_encrypt(key().public_key(), plaintext.encode())
    assert dec.decrypt_body(oracle_key, b64(data)) == plaintext


# --- replay chunks ------------------------------------------------------------------------


REPLAY_EVENTS = [
    (b"\x1b[?2004hadmin@db-1:~$ ", 0),
    (b"l", 180),
    (b"s\r\n", 95),
    (bytes(range(256)), 1_234_567),  # terminal output is bytes, not text
    (b"", 3),
]


def test_replay_chunk_round_trip_through_the_oracle() -> None:
    enc = encryptor()
    aes_key, query_key = enc.new_query_key()
    data = enc.encrypt_replay_events(aes_key, REPLAY_EVENTS)
    items = json.loads(oracle_decrypt(oracle_unwrap(key(), query_key), data))
    assert [(base64.b64decode(i["data"]), i["duration"]) for i in items] == REPLAY_EVENTS
    assert QueryDecryptor(key()).replay_events(query_key, data) == REPLAY_EVENTS


def test_replay_events_written_by_the_oracle() -> None:
    """A float duration is read as whole milliseconds; an empty chunk is no events."""
    text = json.dumps([{"data": b64(b"hello"), "duration": 12.9}, {"data": "", "duration": 0}])
    query_key, data = oracle_encrypt(key().public_key(), text.encode())
    assert QueryDecryptor(key()).replay_events(query_key, data) == [(b"hello", 12), (b"", 0)]
    query_key, data = oracle_encrypt(key().public_key(), b"[]")
    assert QueryDecryptor(key()).replay_events(query_key, data) == []


@pytest.mark.parametrize(
    ("plaintext", "reason"),
    [
        (b"not json", decryption.REPLAY_NOT_JSON),
        (b'{"data": "aGk=", "duration": 1}', decryption.REPLAY_NOT_EVENTS),
        (b"[1, 2]", decryption.REPLAY_NOT_EVENTS),
        (b'[{"duration": 1}]', decryption.REPLAY_NOT_EVENTS),
        (b'[{"data": "aGk=", "duration": "1"}]', decryption.REPLAY_NOT_EVENTS),
        (b'[{"data": "aGk=", "duration": true}]', decryption.REPLAY_NOT_EVENTS),
        (b'[{"data": "not base64!", "duration": 1}]', decryption.REPLAY_EVENT_NOT_BASE64),
    ],
)
def test_a_bad_replay_chunk_is_a_decryption_error(plaintext: bytes, reason: str) -> None:
    query_key, data = oracle_encrypt(key().public_key(), plaintext)
    with pytest.raises(DecryptionError) as caught:
        QueryDecryptor(key()).replay_events(query_key, data)
    assert caught.value.reason == reason


def test_replay_chunk_data_of_the_wrong_length() -> None:
    enc = encryptor()
    aes_key, query_key = enc.new_query_key()
    data = enc.encrypt_replay_events(aes_key, REPLAY_EVENTS)
    dec = QueryDecryptor(key())
    for bad, reason in ((data[:-1], decryption.REPLAY_NOT_ALIGNED), (data[:15], decryption.REPLAY_TOO_SHORT)):
        with pytest.raises(DecryptionError) as caught:
            dec.replay_events(query_key, bad)
        assert caught.value.reason == reason


# --- the cache of opened query keys ---------------------------------------------------------


def test_a_query_key_seen_twice_costs_one_rsa_operation() -> None:
    """A session's body and every replay chunk share one query key: one RSA operation."""
    counting = CountingKey(key())
    dec = QueryDecryptor(counting)  # type: ignore[arg-type]
    enc = encryptor()
    aes_key, query_key = enc.new_query_key()
    assert dec.decrypt_body(query_key, enc.encrypt_body(aes_key, "SELECT 1")) == "SELECT 1"
    for _ in range(5):
        assert (
            dec.replay_events(query_key, enc.encrypt_replay_events(aes_key, REPLAY_EVENTS)) == REPLAY_EVENTS
        )
    assert counting.decrypts == 1


def test_the_cache_is_bounded_and_evicts_the_least_recently_used_key() -> None:
    counting = CountingKey(key())
    dec = QueryDecryptor(counting, cache_size=2)  # type: ignore[arg-type]
    enc = encryptor()
    a, b, c = (enc.new_query_key()[1] for _ in range(3))
    for query_key in (a, b, a, c):  # c evicts b, the least recently used; a was used again
        dec.open_key(query_key)
    assert counting.decrypts == 3
    dec.open_key(a)
    assert counting.decrypts == 3
    dec.open_key(b)
    assert counting.decrypts == 4


def test_cache_size_zero_caches_nothing_and_failures_are_not_cached() -> None:
    counting = CountingKey(key())
    dec = QueryDecryptor(counting, cache_size=0)  # type: ignore[arg-type]
    query_key = encryptor().new_query_key()[1]
    dec.open_key(query_key)
    dec.open_key(query_key)
    assert counting.decrypts == 2
    with pytest.raises(ValueError):
        QueryDecryptor(key(), cache_size=-1)


# --- bad records ------------------------------------------------------------------------------


def _good_record(plaintext: str = "SELECT secret_column FROM t") -> tuple[str, str]:
    enc = encryptor()
    aes_key, query_key = enc.new_query_key()
    return query_key, enc.encrypt_body(aes_key, plaintext)


def _bad_records() -> list[tuple[str, str, str, str]]:
    """(case, query_key, query_body, expected reason)."""
    query_key, body = _good_record()
    data = base64.b64decode(body)
    other_key = QueryEncryptor(rsa_key("other").public_key()).new_query_key()[1]
    small_key = QueryEncryptor(rsa_key("small", 1024).public_key()).new_query_key()[1]
    not_utf8_key, not_utf8 = oracle_encrypt(key().public_key(), b"\xff\xfe\xc3(")
    not_aes_wrap = b64(key().public_key().encrypt(b"seven b", _oaep()))
    return [
        ("wrong key", other_key, body, decryption.KEY_DOES_NOT_OPEN),
        ("wrong key size", small_key, body, decryption.KEY_WRONG_SIZE),
        ("key not base64", "%%%not base64%%%", body, decryption.KEY_NOT_BASE64),
        ("key not ascii", "é" * 8, body, decryption.KEY_NOT_BASE64),
        ("no key", "", body, decryption.NO_QUERY_KEY),
        ("wrap not an aes key", not_aes_wrap, body, decryption.KEY_NOT_AES),
        ("body not base64", query_key, "SELECT 1", decryption.BODY_NOT_BASE64),
        ("body not ascii", query_key, "Zoë", decryption.BODY_NOT_BASE64),
        ("no body", query_key, "", decryption.NO_QUERY_BODY),
        ("truncated body", query_key, b64(data[:-5]), decryption.BODY_NOT_ALIGNED),
        ("body one block short of its IV", query_key, b64(data[:8]), decryption.BODY_TOO_SHORT),
        ("body not utf-8", not_utf8_key, b64(not_utf8), decryption.BODY_NOT_UTF8),
    ]


BAD_RECORDS = _bad_records()


@pytest.mark.parametrize(
    ("case", "query_key", "body", "reason"), BAD_RECORDS, ids=[r[0] for r in BAD_RECORDS]
)
def test_a_bad_record_is_a_decryption_error_with_a_safe_reason(
    case: str, query_key: str, body: str, reason: str
) -> None:
    with pytest.raises(DecryptionError) as caught:
        QueryDecryptor(key()).decrypt_body(query_key, body)
    assert caught.value.reason == reason
    assert str(caught.value) == reason
    assert caught.value.__cause__ is None and (
        caught.value.__suppress_context__ or not caught.value.__context__
    )
    for secret in (query_key, body, "secret_column"):
        assert not secret or secret not in reason


def _record(**fields: Any) -> Any:
    return json_format.ParseDict(
        {"id": "q-0001", "timestamp": "2024-05-01T12:34:56Z", "queryCategory": "datasources", **fields},
        STREAMS["queries"].record_class(),
    )


def encrypted_event(query_key: str, body: str, **fields: Any) -> dict[str, Any]:
    """A queries event exactly as the daemon makes it from an encrypted record."""
    return to_event(STREAMS["queries"], _record(encrypted=True, queryKey=query_key, queryBody=body, **fields))


@pytest.mark.parametrize(
    ("case", "query_key", "body", "reason"), BAD_RECORDS, ids=[r[0] for r in BAD_RECORDS]
)
def test_decrypt_query_event_flags_a_bad_record_without_raising_or_mutating(
    case: str, query_key: str, body: str, reason: str
) -> None:
    event = encrypted_event(query_key, body, replayable=True)
    before = copy.deepcopy(event)
    out = decrypt_query_event(event, QueryDecryptor(key()))
    assert event == before
    assert out is not event
    assert out == {**before, "decryption": "failed", "decryptionError": reason}


def test_decrypt_query_event_flags_missing_fields() -> None:
    dec = QueryDecryptor(key())
    out = decrypt_query_event({"encrypted": True, "queryBody": "AAAA"}, dec)
    assert (out["decryption"], out["decryptionError"]) == ("failed", decryption.NO_QUERY_KEY)
    out = decrypt_query_event({"encrypted": True, "queryKey": _good_record()[0], "queryBody": None}, dec)
    assert (out["decryption"], out["decryptionError"]) == ("failed", decryption.NO_QUERY_BODY)


@settings(max_examples=150, deadline=None)
@given(
    query_key=st.one_of(st.text(), st.just(_good_record()[0])),
    body=st.one_of(st.text(), st.binary().map(b64)),
)
def test_decrypt_query_event_never_raises(query_key: str, body: str) -> None:
    event = {"encrypted": True, "queryKey": query_key, "queryBody": body, "capture": None}
    out = decrypt_query_event(event, QueryDecryptor(key()))
    assert out["decryption"] in ("decrypted", "failed")
    assert event == {"encrypted": True, "queryKey": query_key, "queryBody": body, "capture": None}


# --- events -------------------------------------------------------------------------------------


def test_an_unencrypted_event_is_returned_as_it_is() -> None:
    event = to_event(STREAMS["queries"], _record(queryBody="SELECT 1"))
    assert decrypt_query_event(event, QueryDecryptor(key())) is event
    assert decrypt_query_event(event, None) is event
    assert "decryption" not in event


def test_without_a_key_the_event_is_exported_as_received_and_flagged() -> None:
    event = encrypted_event(*_good_record())
    before = copy.deepcopy(event)
    out = decrypt_query_event(event, None)
    assert out == {**before, "decryption": "no_key"}
    assert event == before


def test_a_sql_body_is_decrypted_and_nothing_else_changes() -> None:
    query_key, body = _good_record("SELECT * FROM orders WHERE id = 7")
    event = encrypted_event(query_key, body)
    before = copy.deepcopy(event)
    out = decrypt_query_event(event, QueryDecryptor(key()))
    assert out == {**before, "queryBody": "SELECT * FROM orders WHERE id = 7", "decryption": "decrypted"}
    assert event == before


SHELL_CAPTURE_CAMEL = {
    "type": "shell",
    "command": "",
    "width": 120,
    "height": 40,
    "env": {"TERM": "xterm-256color", "LANG": "en_US.UTF-8"},
    "clientCommand": "ssh bastion-1",
    "fileSize": "0",
    "impersonationGroups": [],
}
K8S_CAPTURE_SNAKE = {
    "type": "k8s-exec",
    "pod": "api-7d9f8-12",
    "container": "api",
    "request_method": "POST",
    "request_uri": "/api/v1/namespaces/prod/pods/api-7d9f8-12/exec?command=sh",
    "client_command": "kubectl exec -it api-7d9f8-12 -- sh",
    "impersonation_user": "alice@example.com",
    "impersonation_groups": ["system:authenticated", "sre-engineers"],
    "privilege_groups": ["sre"],
    "some_future_field": {"unknown": True},  # a newer server's field: ignored
}
COMMAND_CAPTURE = {"type": "command", "command": "uptime", "width": 80, "height": 24}
RDP_CAPTURE = {"type": "rdp-enhanced", "width": 1920, "height": 1080}


def _capture_of_a_plaintext_record(capture: dict[str, Any], keep_credentials: bool) -> dict[str, Any]:
    """``capture`` as the daemon fills it for the same session when it is not encrypted."""
    record = _record(queryCategory="ssh")
    json_format.ParseDict(capture, record.capture, ignore_unknown_fields=True)
    event = to_event(STREAMS["queries"], record, keep_credentials=keep_credentials)
    return event["capture"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("capture", "replayable"),
    [(SHELL_CAPTURE_CAMEL, True), (K8S_CAPTURE_SNAKE, True), (COMMAND_CAPTURE, False), (RDP_CAPTURE, True)],
    ids=["shell-camelCase", "k8s-exec-snake_case", "command", "rdp"],
)
@pytest.mark.parametrize("keep_credentials", [False, True])
def test_a_capture_body_fills_capture_and_replayable(
    capture: dict[str, Any], replayable: bool, keep_credentials: bool
) -> None:
    text = json.dumps(capture)
    query_key, body = _good_record(text)
    event = encrypted_event(query_key, body, queryCategory="ssh", replayable=not replayable)
    before = copy.deepcopy(event)
    out = decrypt_query_event(event, QueryDecryptor(key()), keep_credentials=keep_credentials)
    assert event == before
    assert out["decryption"] == "decrypted"
    assert out["queryBody"] == text
    assert out["capture"] == _capture_of_a_plaintext_record(capture, keep_credentials)
    assert out["capture"]["type"] == capture["type"]
    assert out["replayable"] is replayable


def test_the_capture_goes_through_the_compiled_converter_with_the_credentials_choice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redaction rules apply as for a plaintext capture: same converter, same choice."""
    asked: list[tuple[str, bool]] = []
    real = compiled.converter_for

    def spy(descriptor: Any, *, keep_credentials: bool = False) -> compiled.Converter:
        asked.append((descriptor.full_name, keep_credentials))
        return real(descriptor, keep_credentials=keep_credentials)

    monkeypatch.setattr(compiled, "converter_for", spy)
    event = encrypted_event(*_good_record(json.dumps(SHELL_CAPTURE_CAMEL)))
    decrypt_query_event(event, QueryDecryptor(key()), keep_credentials=True)
    decrypt_query_event(event, QueryDecryptor(key()))
    assert asked == [("v1.QueryCapture", True), ("v1.QueryCapture", False)]


def test_the_replayable_types_are_the_sdks_names() -> None:
    from strongdm.constants import CaptureType

    sdk_types = {v for k, v in vars(CaptureType).items() if not k.startswith("_")}
    replayable = set(REPLAYABLE_CAPTURE_TYPES)
    assert replayable == {"shell", "k8s-exec", "k8s-execTTY", "rdp-basic", "rdp-enhanced"}
    assert replayable <= sdk_types


@pytest.mark.parametrize(
    "text",
    [
        '{"type": "shell", "width": "wide"}',  # ParseDict refuses: the capture is left alone
        '{"type": "shell", "requestBody": "not base64!"}',
        '{"clientName": "LAPTOP-1", "resolution": "1920x1080"}',  # JSON, but no capture type
        '["shell"]',
        '{"type": "shell"',  # broken JSON
        "  {not json at all",
    ],
)
def test_a_body_that_is_not_a_usable_capture_keeps_the_capture_as_received(text: str) -> None:
    query_key, body = _good_record(text)
    event = encrypted_event(query_key, body, queryCategory="ssh", replayable=True)
    before = copy.deepcopy(event)
    out = decrypt_query_event(event, QueryDecryptor(key()))
    assert out == {**before, "queryBody": text, "decryption": "decrypted"}


# --- key files ---------------------------------------------------------------------------------

PASSPHRASE = b"correct horse battery staple"
WRONG_PASSPHRASE = b"Tr0ub4dor&3"


def _secrets_of(pem: bytes) -> list[str]:
    """Every 16-character piece of a PEM file's base64 lines: none may appear in a message."""
    lines = [
        line
        for line in pem.decode().splitlines()
        if line and not line.startswith("-----") and ":" not in line
    ]
    return [line[i : i + 16] for line in lines for i in range(0, max(len(line) - 15, 1), 8)]


def assert_safe_message(exc: KeyFileError, path: Path, pem: bytes = b"") -> str:
    message = str(exc)
    assert str(path) in message
    for piece in _secrets_of(pem):
        assert piece not in message
    for passphrase in (PASSPHRASE, WRONG_PASSPHRASE):
        assert passphrase.decode() not in message
    # Nothing of the library's (or the OS's) exception rides along into a traceback either.
    assert exc.__cause__ is None and (exc.__suppress_context__ or exc.__context__ is None)
    return message


@pytest.mark.parametrize("pkcs8", [True, False], ids=["pkcs8", "pkcs1"])
@pytest.mark.parametrize("passphrase", [None, PASSPHRASE], ids=["plain", "encrypted"])
def test_load_private_key_reads_pkcs1_and_pkcs8_plain_or_encrypted(
    tmp_path: Path, pkcs8: bool, passphrase: bytes | None
) -> None:
    pem = private_key_pem(key(), passphrase=passphrase, pkcs8=pkcs8)
    header = {
        (True, False): b"-----BEGIN PRIVATE KEY-----",
        (False, False): b"-----BEGIN RSA PRIVATE KEY-----",
        (True, True): b"-----BEGIN ENCRYPTED PRIVATE KEY-----",
        (False, True): b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED",
    }[pkcs8, passphrase is not None]
    assert pem.startswith(header)
    path = tmp_path / "org.pem"
    path.write_bytes(pem)
    loaded = load_private_key(path, passphrase)
    assert loaded.private_numbers() == key().private_numbers()
    query_key, body = _good_record("SELECT 1")
    assert QueryDecryptor(loaded).decrypt_body(query_key, body) == "SELECT 1"


@pytest.mark.parametrize("pkcs8", [True, False], ids=["pkcs8", "pkcs1"])
def test_an_encrypted_key_without_its_passphrase(tmp_path: Path, pkcs8: bool) -> None:
    pem = private_key_pem(key(), passphrase=PASSPHRASE, pkcs8=pkcs8)
    path = tmp_path / "org.pem"
    path.write_bytes(pem)
    with pytest.raises(KeyFileError) as missing:
        load_private_key(path)
    assert "log_private_key_passphrase_file" in assert_safe_message(missing.value, path, pem)
    with pytest.raises(KeyFileError) as wrong:
        load_private_key(path, WRONG_PASSPHRASE)
    assert "passphrase does not open" in assert_safe_message(wrong.value, path, pem)


def test_a_passphrase_for_a_key_that_has_none(tmp_path: Path) -> None:
    pem = private_key_pem(key())
    path = tmp_path / "org.pem"
    path.write_bytes(pem)
    with pytest.raises(KeyFileError) as caught:
        load_private_key(path, PASSPHRASE)
    assert "not encrypted" in assert_safe_message(caught.value, path, pem)


def test_an_unreadable_key_file_names_the_os_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pem"
    with pytest.raises(KeyFileError) as caught:
        load_private_key(missing)
    assert "No such file or directory" in assert_safe_message(caught.value, missing)
    with pytest.raises(KeyFileError) as caught:
        load_private_key(tmp_path)
    assert "Is a directory" in assert_safe_message(caught.value, tmp_path)


def test_a_key_file_without_read_permission(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pem = private_key_pem(key())
    path = tmp_path / "org.pem"
    path.write_bytes(pem)
    path.chmod(0)
    if os.geteuid() == 0:  # root reads any file (CI runs as root): refuse it as the kernel would
        real_open = Path.open

        def refuse(self: Path, *args: Any, **kwargs: Any) -> Any:
            if self == path:
                raise PermissionError(13, "Permission denied", str(self))
            return real_open(self, *args, **kwargs)

        monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(KeyFileError) as caught:
        load_private_key(path)
    assert "Permission denied" in assert_safe_message(caught.value, path, pem)


def _public_pem() -> bytes:
    return (
        key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def _pkcs1_public_pem() -> bytes:
    return key().public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)


def _ec_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _damaged_pem() -> bytes:
    lines = private_key_pem(key()).splitlines()
    return b"\n".join(lines[:5] + lines[-1:]) + b"\n"  # the middle is gone


def _der() -> bytes:
    return key().private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (_public_pem, "public key"),
        (_pkcs1_public_pem, "public key"),
        (_ec_pem, "not an RSA key"),
        (_damaged_pem, "not a readable PEM private key"),
        (_der, "not a PEM file"),
        (lambda: b"hello, I am not a key\n", "not a PEM file"),
        (lambda: b"", "not a PEM file"),
        (lambda: b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n", "OpenSSH"),
    ],
    ids=["public", "pkcs1-public", "ec", "damaged", "der", "garbage", "empty", "openssh"],
)
def test_a_file_that_is_not_an_rsa_private_key(tmp_path: Path, make: Any, expected: str) -> None:
    data = make()
    path = tmp_path / "org.pem"
    path.write_bytes(data)
    with pytest.raises(KeyFileError) as caught:
        load_private_key(path)
    message = assert_safe_message(caught.value, path, data if data.startswith(b"-----") else b"")
    assert expected in message
    if data.startswith(b"-----"):  # any piece of the key material, even of a public key
        assert not any(piece in message for piece in _secrets_of(private_key_pem(key())))


def test_a_huge_file_is_not_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "big.pem"
    path.write_bytes(b"-----BEGIN PRIVATE KEY-----\n" + b"A" * (2 << 20))
    with pytest.raises(KeyFileError) as caught:
        load_private_key(path)
    assert "larger than" in assert_safe_message(caught.value, path)
