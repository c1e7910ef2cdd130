"""ManagedSecrets.Logs records: who retrieved, created, rotated... which managed secret.

Like activities, a record is a small reused header (``id``, ``created_at``) serialized and
concatenated with a pooled body (account, action, secret, engine, debug): the wire format
makes the concatenation a merge, and a million records cost microseconds each.

Retrievals dominate (people and services read credentials far more often than anyone
changes them); ``debug`` is empty except on the occasional failed or rotated operation,
which is what the few real samples show.
"""

from __future__ import annotations

import random

from strongdm import managed_secrets_pb2

from auditstream.emulator.data.vocabulary import Named, Vocabulary
from auditstream.emulator.store import Row

NANOS = 1_000_000_000

# (action, weight)
ACTIONS: tuple[tuple[str, int], ...] = (
    ("retrieve", 70),
    ("validate", 10),
    ("update", 6),
    ("rotate", 6),
    ("create", 5),
    ("delete", 3),
)
DEBUG_MESSAGES: dict[str, tuple[str, ...]] = {
    "retrieve": ("lease issued ttl=3600s", "permission denied by policy"),
    "validate": ("credentials valid", "validation failed: invalid credentials"),
    "rotate": ("rotation completed in 1.8s", "rotation failed: target unreachable, will retry"),
    "update": ("tags updated",),
    "create": ("secret created from template",),
    "delete": ("secret scheduled for deletion",),
}
DEBUG_RATE = 0.08


class SecretLogFactory:
    def __init__(self, vocab: Vocabulary, rng: random.Random, pool_size: int = 256) -> None:
        self._vocab = vocab
        self._rng = rng
        self._actions = [a for a, _ in ACTIONS]
        self._weights = [w for _, w in ACTIONS]
        self._bodies = [self._body() for _ in range(pool_size)]
        self._header = managed_secrets_pb2.ManagedSecretLog()

    def _actor(self) -> str:
        v, rng = self._vocab, self._rng
        # services read secrets too (CI, backups); people do everything else as well
        if rng.random() < 0.25:
            return rng.choice(v.services).id
        return rng.choice(v.people).id

    def _body(self) -> bytes:
        rng = self._rng
        secret: Named = rng.choice(self._vocab.managed_secrets)
        action = rng.choices(self._actions, self._weights)[0]
        record = managed_secrets_pb2.ManagedSecretLog(
            account_id=self._actor(),
            action=action,
            managed_secret_id=secret.id,
            secret_engine_id=secret.kind,  # the engine the secret lives in
        )
        if rng.random() < DEBUG_RATE:
            record.debug = rng.choice(DEBUG_MESSAGES[action])
        payload: bytes = record.SerializeToString()
        return payload

    def make(self, time_ns: int) -> Row:
        header = self._header
        header.id = self._vocab.mint.new("msl-")
        header.created_at.seconds, header.created_at.nanos = divmod(time_ns, NANOS)
        return Row(header.SerializeToString() + self._rng.choice(self._bodies), header.id, time_ns)

    def make_many(self, times: list[int]) -> list[Row]:
        return [self.make(t) for t in times]
