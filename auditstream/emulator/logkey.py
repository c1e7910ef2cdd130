"""The organisation's log encryption key, as the emulator gets or makes it.

StrongDM holds only the public half of an organisation's key; the emulator may hold the
private half too so a test can hand it to the daemon (``Emulator.log_private_key_pem``).
``log_key_file`` may therefore name either kind of PEM. A path that does not exist gets a
new private key (created with mode 0600, never overwriting anything), so a daemon run in
another process can be pointed at the same file. Nothing here runs, and the cryptography
package is not even imported, unless ``encrypted_fraction`` > 0.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

    from auditstream.emulator.options import EmulatorOptions


NOT_RSA = "log_key_file {path} is not an RSA key: StrongDM wraps query keys with RSA-OAEP"


class LogKeyError(ValueError):
    """``log_key_file`` cannot be used; the message names the file, never its content."""


@dataclass(frozen=True)
class LogKey:
    public_key: RSAPublicKey
    private_pem: bytes | None  # PKCS#8 PEM, when the emulator knows the private half
    key_id: str  # what encrypted queries carry in ``query_key_id``


def key_id(public_key: RSAPublicKey) -> str:
    """The SHA-256 fingerprint of the public key (DER SubjectPublicKeyInfo), 32 hex digits.

    Which key encrypted a query is what ``query_key_id`` tells an organisation that
    rotates keys; StrongDM's own format for it is not documented.
    """
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:32]


def resolve_log_key(options: EmulatorOptions) -> LogKey | None:
    """The key to encrypt queries to, or None when no query is to be encrypted."""
    if options.encrypted_fraction <= 0:
        return None
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

    from auditstream.emulator import crypto

    if options.log_key_file is None:
        generated = crypto.generate_private_key()
        public = generated.public_key()
        return LogKey(public, crypto.private_key_pem(generated), key_id(public))
    path = Path(options.log_key_file)
    if not path.exists():
        _write_new_key(path, crypto.private_key_pem(crypto.generate_private_key()))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LogKeyError(f"cannot read log_key_file {path}: {exc.strerror}") from None
    if b"PRIVATE KEY" in data:
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            raise LogKeyError(
                f"log_key_file {path} is not an unencrypted PEM private key (a passphrase-protected "
                "key is not supported here)"
            ) from None
        if not isinstance(private, RSAPrivateKey):
            raise LogKeyError(NOT_RSA.format(path=path))
        return LogKey(private.public_key(), crypto.private_key_pem(private), key_id(private.public_key()))
    try:
        loaded = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise LogKeyError(f"log_key_file {path} is neither a PEM private key nor a PEM public key") from None
    if not isinstance(loaded, RSAPublicKey):
        raise LogKeyError(NOT_RSA.format(path=path))
    return LogKey(loaded, None, key_id(loaded))


def _write_new_key(path: Path, pem: bytes) -> None:
    """Create ``path`` (mode 0600) holding ``pem``, atomically and without replacing anything.

    Written to a temporary file, then hard-linked into place: a reader never sees half a
    key, and when two emulators start at once on the same path, the second uses the first's.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
            os.link(tmp, path)
    except OSError as exc:
        raise LogKeyError(f"cannot create log_key_file {path}: {exc.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)
