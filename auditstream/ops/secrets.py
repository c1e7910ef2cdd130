"""Which strings of a configuration are secrets, in every form they could leak in.

Every secret in the configuration is a pydantic ``SecretStr`` (the API secret key, sink
tokens and passwords, the redaction hash key, TLS key passwords), so finding them needs no
list that could fall behind the schema. Besides the value itself, a secret can leak as the
base64 of itself, as what it decodes to (the StrongDM secret key is base64), or inside an
HTTP Basic ``Authorization`` header.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, SecretStr


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    """(field name, value) of every field of every model under ``node``."""
    if isinstance(node, BaseModel):
        for name, value in node:
            yield name, value
            yield from _walk(value)
    elif isinstance(node, list | tuple):
        for item in node:
            yield from _walk(item)
    elif isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)


def _basic_credentials(node: Any) -> Iterator[str]:
    """``user:password`` of every model with both (HTTP Basic auth)."""
    if isinstance(node, BaseModel):
        username = getattr(node, "username", None)
        password = getattr(node, "password", None)
        if isinstance(username, str) and isinstance(password, SecretStr):
            yield f"{username}:{password.get_secret_value()}"
        for _, value in node:
            yield from _basic_credentials(value)
    elif isinstance(node, list | tuple):
        for item in node:
            yield from _basic_credentials(item)


def _decoded(value: str) -> str | None:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def forms(secret: str) -> set[str]:
    """The secret, its base64 (standard and URL-safe), and its base64-decoded text if any."""
    encoded = secret.encode()
    found = {secret, base64.b64encode(encoded).decode(), base64.urlsafe_b64encode(encoded).decode()}
    decoded = _decoded(secret)
    if decoded:
        found.add(decoded)
    return {f for f in found if f}


def config_secrets(config: BaseModel) -> set[str]:
    """Every secret of ``config`` in every form it could leak in."""
    values = [value.get_secret_value() for _, value in _walk(config) if isinstance(value, SecretStr)]
    values.extend(_basic_credentials(config))
    return {form for value in values if value for form in forms(value)}
