"""Building blocks shared by every configuration model: strictness, durations, secrets.

Lives apart from ``config.py`` so that sink and format modules can declare their own
settings without importing the whole loader (which imports them).
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Annotated, Any, ClassVar, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, model_validator

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> float:
    """``"30s"``, ``"5m"``, ``"1h30m"``, ``"250ms"`` or a bare number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError('expected a duration like "30s", "5m" or "1h"')
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError('expected a duration like "30s", "5m" or "1h"')
    text = value.strip().replace(" ", "")
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f'{value!r} is not a duration; use forms like "30s", "5m", "1h30m", "250ms"')
    return total


Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]


def _is_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return any(_is_secret(arg) for arg in get_args(annotation))


class StrictModel(BaseModel):
    """Unknown keys are errors (a typo must not silently disable a setting), and every
    secret field ``X`` may instead be given as ``X_file``: a path whose content is the secret,
    which is how Kubernetes Secrets and systemd credentials hand secrets over."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # Plain (non-secret) fields that may also come from a file, e.g. an access key that
    # lives in the same Kubernetes Secret as its secret key.
    file_fields: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        resolved = dict(data)
        for name, field in cls.model_fields.items():
            file_key = f"{name}_file"
            from_file = _is_secret(field.annotation) or name in cls.file_fields
            if file_key not in resolved or not from_file:
                continue
            if resolved.get(name) not in (None, ""):
                raise ValueError(f"give either {name} or {file_key}, not both")
            path = Path(str(resolved.pop(file_key)))
            try:
                secret = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"{file_key}: cannot read {path}: {exc.strerror or exc}") from None
            if not secret:
                raise ValueError(f"{file_key}: {path} is empty")
            resolved[name] = secret
        return resolved


class TlsSettings(StrictModel):
    """Client-side TLS for any outbound connection. Verification is on unless turned off."""

    verify: bool = True
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    key_password: SecretStr | None = None
    server_name: str | None = None

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (client certificate authentication)")
        return self

    def ssl_context(self) -> ssl.SSLContext:
        """A client context; raises ValueError naming the file when one cannot be loaded."""
        try:
            context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot load CA bundle {self.ca_file}: {exc}") from None
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.cert_file is not None and self.key_file is not None:
            password = self.key_password.get_secret_value() if self.key_password else None
            try:
                context.load_cert_chain(str(self.cert_file), str(self.key_file), password=password)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(
                    f"cannot load client certificate {self.cert_file} / key {self.key_file}: {exc}"
                ) from None
        return context
