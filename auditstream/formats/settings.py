"""Configuration of the normalization layer, mounted by the config loader under ``[normalize]``.

``[cef]`` is ``CefSettings`` (in ``cef``, re-exported here so the loader imports one module).
Everything that could leave a secret in clear is decided when the configuration is loaded,
not at the first event: a hash rule without a key, a masking rule that does not compile, a
private key file that cannot be read or opened. A daemon that cannot protect content must not
start and ship it in clear.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, PrivateAttr, SecretStr, model_validator

from auditstream.formats.cef import CefSettings
from auditstream.formats.decryption import KeyFileError, QueryDecryptor, load_private_key
from auditstream.formats.events import RecordConverter, event_converter
from auditstream.formats.masking import Masker, MaskRule
from auditstream.formats.redaction import RedactionRule, Redactor
from auditstream.sdm.registry import StreamSpec
from auditstream.settings_base import StrictModel

__all__ = ["CefSettings", "NormalizeSettings"]


class NormalizeSettings(StrictModel):
    """``[normalize]``: decryption, secret masking, and fields to drop or hash."""

    # Credential fields of history entities (passwords, private keys, tokens...) read
    # "[redacted]" when set unless this is true; see formats.credentials and docs/formats.md.
    keep_credentials: bool = False

    # Credentials inside session content (query bodies, captures, replay text, activity
    # descriptions) are replaced by "[masked]" (formats.masking); custom rules add to them.
    mask_secrets: bool = True
    mask: list[MaskRule] = Field(default_factory=list)

    # The organisation's private key for StrongDM's log encryption (PEM, PKCS#1 or PKCS#8):
    # encrypted query bodies and replays are decrypted with it, then masked.
    log_private_key_file: Path | None = None
    log_private_key_passphrase: SecretStr | None = None  # or log_private_key_passphrase_file

    redact: list[RedactionRule] = Field(default_factory=list)
    hash_key: SecretStr | None = None  # or hash_key_file; never logged (SecretStr)

    _private_key: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _usable(self) -> NormalizeSettings:
        self.redactor()  # raises ValueError naming the first hash rule without a key
        if self.log_private_key_passphrase is not None and self.log_private_key_file is None:
            raise ValueError("log_private_key_passphrase is set but log_private_key_file is not")
        if self.log_private_key_file is not None:
            passphrase = self.log_private_key_passphrase
            try:
                self._private_key = load_private_key(
                    self.log_private_key_file,
                    passphrase.get_secret_value().encode("utf-8") if passphrase is not None else None,
                )
            except KeyFileError as exc:
                raise ValueError(f"log_private_key_file: {exc}") from None
        self.masker()  # custom rules are checked by MaskRule itself; built once here too
        return self

    def event_converter(self, spec: StreamSpec) -> RecordConverter:
        """The record -> event function for one stream under these settings (no redaction)."""
        return event_converter(spec, keep_credentials=self.keep_credentials)

    def redactor(self) -> Redactor:
        """The Redactor these settings describe."""
        key = self.hash_key.get_secret_value().encode("utf-8") if self.hash_key is not None else None
        return Redactor(self.redact, key)

    def masker(self) -> Masker | None:
        """The masking rules in force: the built-in ones unless ``mask_secrets`` is false, and
        the custom ``[[normalize.mask]]`` rules always; None when there are none."""
        if not self.mask_secrets and not self.mask:
            return None
        return Masker(self.mask, builtin=self.mask_secrets)

    def decryptor(self) -> QueryDecryptor | None:
        """What opens encrypted queries and replays, None without a private key."""
        return QueryDecryptor(self._private_key) if self._private_key is not None else None
