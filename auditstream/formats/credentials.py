"""Which protobuf fields hold credentials, decided once from the SDK's descriptors.

History entities describe resources, secret stores and nodes, and the SDK models their
credentials as ordinary fields (``password``, ``private_key``, ``secret_access_key``...). The
API may or may not fill them; either way they must not reach a SIEM unless the operator asks
for it (``[normalize] keep_credentials = true``). Listing them by hand would miss the next
SDK release's new resource type, so the rule works on field names:

1. Only text and bytes fields can hold credential material (a bool, number, timestamp or
   nested message cannot; nested messages are judged field by field themselves).
2. A text or bytes field whose name contains one of the ``SUSPICIOUS`` words (password,
   secret, token, private, key, credential, cert, auth...) is a credential, unless
3. it is allow-listed in ``NOT_CREDENTIALS``, by field name or ``Message.field``, each entry
   with the reason why it holds no secret (ids, paths, public keys and certificates...).
4. ``SECRET_FLAGS`` adds fields whose name says nothing but whose message marks them secret
   with a boolean flag (an HTTP resource's custom header ``value`` when ``secret`` is true).

A credential that is set is replaced by ``REDACTED``; an empty one stays empty, so the event
keeps every field (its shape does not depend on the setting) and analysts can still see
that a resource holds an inline credential rather than a secret-store reference, which is
useful on its own. ``tests/formats/test_credentials.py`` checks the rule over every message
type reachable from the streams, so an SDK upgrade that adds a suspicious field fails there
until the field is either redacted or allow-listed with a reason.
"""

from __future__ import annotations

import re

from google.protobuf.descriptor import Descriptor, FieldDescriptor

REDACTED = "[redacted]"

# Words that suggest credential material, matched anywhere in the lower-cased field name.
SUSPICIOUS = re.compile(r"pass(word|wd|phrase)?|secret|token|private|key|cred|cert|auth|otp|salt|seed")

_TEXT_TYPES = (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES)

# Suspicious-looking text fields that hold no secret: field name (any message) or
# "Message.field" (one message) -> why. Everything else the rule matches is redacted.
NOT_CREDENTIALS: dict[str, str] = {
    "secret_store_id": "id of the secret store holding the credentials, not a credential",
    "managed_secret_id": "id of a managed secret (secret-access logs), not the secret",
    "secret_engine_id": "id of the secret engine holding a managed secret, not a credential",
    "certificate_authority_id": "id of a certificate authority",
    "query_key_id": "id of the key that encrypted a query",
    "authentication_id": "id of an authentication event",
    "auth_database": "name of the database to authenticate against (MongoDB)",
    "auth_provider": "name of the organization's identity provider",
    "authzJson": "the authorization decision of a query, no secret",
    "oauth_auth_endpoint": "URL of an OAuth endpoint",
    "oauth_token_endpoint": "URL of an OAuth endpoint",
    "oauth_register_endpoint": "URL of an OAuth endpoint",
    "oauth_scopes": "OAuth scope names",
    "key_type": "the kind of key (rsa, ecdsa...), not the key",
    "CA_cert_path": "a file path on the gateway, not the certificate",
    "client_cert_path": "a file path on the gateway, not the certificate",
    "client_key_path": "a file path on the gateway, not the key",
    "key_file_path": "a file path on the gateway, not the key",
    "certificate_file_path": "a file path on the gateway, not the certificate",
    "certificateTemplateArn": "ARN of a certificate template",
    "default_certificate_authority_name": "name of a certificate authority",
    "default_certificate_profile_name": "name of a certificate profile",
    "certificate_authority": "a CA certificate: public by design",
    "client_certificate": "a client certificate: public (its private key is client_key)",
    "tls_cert": "a TLS certificate for the upstream connection: public",
    "public_key": "a public key",
    "public_key_pem": "a public key",
    "ssh_certificate_authority_public_key": "a public key",
    "v1.QueryCapture.EnvEntry.key": "an environment variable's name (queries, not a history entity)",
    "v1.Query.query_key": (
        "the query's symmetric key encrypted with the organization's public key; needed to "
        "decrypt an encrypted query body (queries, not a history entity)"
    ),
}

# Message -> (bool flag field, text field): the text field is a credential when the flag is set.
SECRET_FLAGS: dict[str, tuple[str, str]] = {
    "v1.CustomHeader": ("secret", "value"),
}


def looks_like_credential(field: FieldDescriptor) -> bool:
    """Rules 1 and 2: a text or bytes field with a suspicious name (before the allow-list)."""
    return field.type in _TEXT_TYPES and SUSPICIOUS.search(field.name.lower()) is not None


def allow_reason(field: FieldDescriptor) -> str | None:
    """Why a suspicious-looking field holds no secret, None when it is not allow-listed."""
    return NOT_CREDENTIALS.get(f"{field.containing_type.full_name}.{field.name}") or NOT_CREDENTIALS.get(
        field.name
    )


def is_credential(field: FieldDescriptor) -> bool:
    """Whether a field is always redacted by default (rules 1 to 3)."""
    return looks_like_credential(field) and allow_reason(field) is None


def secret_flag(descriptor: Descriptor) -> tuple[str, str] | None:
    """(flag, field) when a field of this message is a credential only if the flag is set."""
    return SECRET_FLAGS.get(descriptor.full_name)
