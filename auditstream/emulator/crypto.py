"""The server's half of StrongDM's encrypted query logs, for the emulator and tests.

What StrongDM does when an organisation's log encryption is set to its RSA public key
(the daemon's side, and the scheme in full, is ``auditstream.formats.decryption``): each
query gets a random 32-byte AES key, wrapped with RSA-OAEP (SHA-256, MGF1-SHA-256, no
label) into ``query_key``; the body is a random 16-byte IV followed by the AES-CBC
ciphertext of the zero-padded plaintext; an encrypted session's replay chunk carries, in
``data``, the same layout over the JSON array ``[{"data": "<base64>", "duration": <ms>}]``.

A ``random.Random`` given to ``QueryEncryptor`` drives the AES keys and IVs, so the same
seed gives the same bodies and replay data. RSA-OAEP wrapping draws its own randomness
from the operating system and cannot be seeded: ``query_key`` differs from run to run.
"""

from __future__ import annotations

import base64
import os
import random
from collections.abc import Sequence

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from auditstream.formats.decryption import BLOCK_BYTES, IV_BYTES, OAEP

AES_KEY_BYTES = 32

__all__ = ["QueryEncryptor", "generate_private_key", "private_key_pem"]


def generate_private_key(bits: int = 2048) -> RSAPrivateKey:
    """A new RSA key pair (public exponent 65537), as an organisation would make one."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def private_key_pem(key: RSAPrivateKey, *, passphrase: bytes | None = None, pkcs8: bool = True) -> bytes:
    """``key`` as a PEM file: PKCS#8 (``BEGIN PRIVATE KEY``) or PKCS#1 (``BEGIN RSA PRIVATE
    KEY``), encrypted with ``passphrase`` when one is given (``BEGIN ENCRYPTED PRIVATE KEY``,
    or OpenSSL's ``Proc-Type: 4,ENCRYPTED`` header for PKCS#1)."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.NoEncryption()
        if passphrase is None
        else serialization.BestAvailableEncryption(passphrase)
    )
    fmt = serialization.PrivateFormat.PKCS8 if pkcs8 else serialization.PrivateFormat.TraditionalOpenSSL
    return key.private_bytes(serialization.Encoding.PEM, fmt, encryption)


class QueryEncryptor:
    """Encrypts query bodies and replay chunks to an organisation's public key."""

    def __init__(self, public_key: RSAPublicKey, rng: random.Random | None = None) -> None:
        self._public_key = public_key
        self._random_bytes = os.urandom if rng is None else rng.randbytes

    def new_query_key(self) -> tuple[bytes, str]:
        """A fresh query's ``(AES key, query_key)``: the key and base64 of its RSA-OAEP wrap."""
        aes_key = self._random_bytes(AES_KEY_BYTES)
        wrapped = self._public_key.encrypt(aes_key, OAEP)
        return aes_key, base64.b64encode(wrapped).decode("ascii")

    def encrypt(self, aes_key: bytes, plaintext: bytes) -> bytes:
        """A random 16-byte IV + AES-CBC of ``plaintext`` padded with NULs to whole blocks.

        Padding adds only what the last block lacks (none for an aligned plaintext, so an
        empty plaintext is the IV alone); the reader strips every trailing NUL either way.
        """
        iv = self._random_bytes(IV_BYTES)
        padded = plaintext + b"\0" * (-len(plaintext) % BLOCK_BYTES)
        encryptor = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).encryptor()
        return iv + encryptor.update(padded) + encryptor.finalize()

    def encrypt_body(self, aes_key: bytes, plaintext: str) -> str:
        """A ``query_body``: base64 of ``encrypt`` over the UTF-8 text."""
        return base64.b64encode(self.encrypt(aes_key, plaintext.encode("utf-8"))).decode("ascii")

    def encrypt_replay_events(self, aes_key: bytes, events: Sequence[tuple[bytes, int]]) -> bytes:
        """An encrypted replay chunk's raw ``data`` (not base64) for ``(event bytes, duration ms)``."""
        items = [{"data": base64.b64encode(data).decode("ascii"), "duration": ms} for data, ms in events]
        return self.encrypt(aes_key, orjson.dumps(items))
