"""Independent readers of what the emulator serves, for its tests.

Written from StrongDM's scheme and from what a terminal shows, sharing no code with the
emulator (``auditstream.emulator.crypto``, ``data.replays``) nor with the daemon
(``auditstream.formats.decryption``): a mistake made identically on both sides of the
wire still fails here.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

# CSI sequences (colours, erase, cursor) and OSC sequences ended by BEL (window titles)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def load_private_key(pem: bytes) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def unwrap(private_key: rsa.RSAPrivateKey, query_key_b64: str) -> bytes:
    """The AES key of one query: RSA-OAEP with SHA-256 and MGF1-SHA-256, no label."""
    oaep = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    return private_key.decrypt(base64.b64decode(query_key_b64), oaep)


def aes_cbc_open(aes_key: bytes, data: bytes) -> bytes:
    """16-byte IV, then AES-CBC of the plaintext padded with NUL bytes."""
    assert len(data) % 16 == 0 and len(data) >= 16
    decryptor = Cipher(algorithms.AES(aes_key), modes.CBC(data[:16])).decryptor()
    return (decryptor.update(data[16:]) + decryptor.finalize()).rstrip(b"\x00")


def decrypt_body(private_key: rsa.RSAPrivateKey, query: Any) -> str:
    aes_key = unwrap(private_key, query.query_key)
    return aes_cbc_open(aes_key, base64.b64decode(query.query_body)).decode("utf-8")


def decrypt_chunk_events(private_key: rsa.RSAPrivateKey, chunk: Any) -> list[tuple[bytes, int]]:
    """An encrypted chunk's events: ``data`` opens to ``[{"data": base64, "duration": ms}]``."""
    aes_key = unwrap(private_key, chunk.symmetric_key)
    items = json.loads(aes_cbc_open(aes_key, chunk.data))
    assert isinstance(items, list)
    return [(base64.b64decode(item["data"]), int(item["duration"])) for item in items]


def apply_backspaces(text: str) -> str:
    """What the line shows after each BS erased the character before it."""
    out: list[str] = []
    for ch in text:
        if ch == "\b":
            if out:
                out.pop()
        else:
            out.append(ch)
    return "".join(out)


def terminal_text(raw: bytes) -> str:
    """The text a reader sees: UTF-8 (with replacement), escape sequences and erased
    characters removed."""
    return apply_backspaces(ANSI.sub("", raw.decode("utf-8", "replace")))
