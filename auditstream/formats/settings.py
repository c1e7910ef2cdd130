"""Configuration of the normalization layer, mounted by the config loader under ``[normalize]``.

``[cef]`` is ``CefSettings`` (in ``cef``, re-exported here so the loader imports one module).
A hash rule without a key is refused when the configuration is loaded, not at the first
event: a daemon that cannot redact must not start and ship the field in clear.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from auditstream.formats.cef import CefSettings
from auditstream.formats.events import RecordConverter, event_converter
from auditstream.formats.redaction import RedactionRule, Redactor
from auditstream.sdm.registry import StreamSpec

__all__ = ["CefSettings", "NormalizeSettings"]


class NormalizeSettings(BaseModel):
    """``[normalize]``: which event fields to drop or hash before any sink sees them."""

    model_config = ConfigDict(extra="forbid")

    # Credential fields of history entities (passwords, private keys, tokens...) read
    # "[redacted]" when set unless this is true; see formats.credentials and docs/formats.md.
    keep_credentials: bool = False

    redact: list[RedactionRule] = Field(default_factory=list)
    # The loader resolves ``hash_key_file`` into this value; it is never logged (SecretStr).
    hash_key: SecretStr | None = None

    @model_validator(mode="after")
    def _hash_rules_need_a_key(self) -> NormalizeSettings:
        self.redactor()  # raises ValueError naming the first hash rule without a key
        return self

    def event_converter(self, spec: StreamSpec) -> RecordConverter:
        """The record -> event function for one stream under these settings (no redaction)."""
        return event_converter(spec, keep_credentials=self.keep_credentials)

    def redactor(self) -> Redactor:
        """The Redactor these settings describe."""
        key = self.hash_key.get_secret_value().encode("utf-8") if self.hash_key is not None else None
        return Redactor(self.redact, key)
