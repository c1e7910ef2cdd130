"""Planted secrets (``secret_fraction``): every family a masker must handle, all served."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable

from auditstream.emulator import Emulator, EmulatorOptions
from auditstream.emulator.data.factory import DataFactory

from .oracle import decrypt_body, decrypt_chunk_events, load_private_key, terminal_text
from .rawclient import list_all

MakeEmulator = Callable[..., Awaitable[Emulator]]
NOW = 1_790_000_000 * 1_000_000_000

# one pattern per family, as it must appear somewhere in what is served
FAMILIES = {
    "mysql create/alter user": r"(CREATE|ALTER) USER '[a-z_]+'@'[^']+' IDENTIFIED BY '",
    "mysql set password": r"SET PASSWORD = '",
    "mysql replication": r"SOURCE_PASSWORD='",
    "postgres role": r"CREATE ROLE \w+ LOGIN PASSWORD '",
    "postgres user mapping": r"CREATE USER MAPPING FOR \w+ SERVER \w+ OPTIONS \(user '\w+', password '",
    "dblink": r"dblink\('[^']*password=\S+",
    "sql server": r"LOGIN \w+ WITH PASSWORD = '",
    "oracle": r"USER \w+ IDENTIFIED BY \w{16,}",
    "redis": r"(^|\n|\")AUTH (default )?\w{24,}",
    "mongo": r'db\.createUser\(\{user: "\w+", pwd: "',
    "url": r"postgres://svc:[^@\s]+@db/prod",
    "mysql -p": r"mysql -uroot -p\S{16,}",
    "PGPASSWORD": r"PGPASSWORD=\S{16,} psql",
    "sshpass": r"sshpass -p \S{16,} ssh",
    "bearer": r"Authorization: Bearer eyJ[\w-]+\.[\w-]+\.[\w-]+",
    "aws secret": r"AWS_SECRET_ACCESS_KEY=[A-Za-z0-9]{40}",
    "aws key id": r"AKIA[A-Z2-7]{16}",
    "kubectl secret": r"kubectl create secret generic [\w-]+ -n \w+ --from-literal=",
    "pem in a session": r"-----BEGIN RSA PRIVATE KEY-----\r\n> MIIE",
}


async def served_text(emu: Emulator) -> str:
    """Every query record (as the text of its serialized bytes) and every replay's text."""
    queries = (await list_all(emu, "queries", limit=1000)).records
    parts = [q.SerializeToString().decode("utf-8", "replace") for q in queries]
    for qid in emu.replayable_query_ids():
        listing = await list_all(emu, "replay_chunks", filter_text=f"id:{json.dumps(qid)}", limit=1000)
        raw = b"".join(e.data for chunk in listing.records for e in chunk.events)
        parts.append(terminal_text(raw))
    return "\n".join(parts)


async def test_nothing_is_planted_by_default(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(records=1000)
    text = await served_text(emu)
    assert emu.planted_secrets() == set()
    assert not [family for family, pattern in FAMILIES.items() if re.search(pattern, text)]


async def test_every_family_is_planted(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(records=3000, secret_fraction=0.5)  # enough for every dialect's families
    text = await served_text(emu)
    missing = [family for family, pattern in FAMILIES.items() if not re.search(pattern, text)]
    assert not missing


async def test_every_planted_value_is_served(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(records=600, secret_fraction=0.3)
    planted = emu.planted_secrets()
    assert len(planted) > 100 and all(len(value) >= 16 for value in planted)
    text = await served_text(emu)
    assert [value for value in planted if value not in text] == []


async def test_encrypted_records_keep_their_secrets_in_the_plaintext(make_emulator: MakeEmulator) -> None:
    """A masker that decrypts has secrets to mask; planted_secrets only lists what is served."""
    emu = await make_emulator(records=600, secret_fraction=0.5, encrypted_fraction=0.5)
    key = load_private_key(emu.log_private_key_pem)
    queries = (await list_all(emu, "queries", limit=1000)).records
    parts = []
    for q in queries:
        clear = q.SerializeToString().decode("utf-8", "replace")
        parts.append(decrypt_body(key, q) if q.encrypted else clear)
    for qid in emu.replayable_query_ids():
        listing = await list_all(emu, "replay_chunks", filter_text=f"id:{json.dumps(qid)}", limit=1000)
        events = [
            data
            for chunk in listing.records
            for data, _ in (
                decrypt_chunk_events(key, chunk) if chunk.data else [(e.data, 0) for e in chunk.events]
            )
        ]
        parts.append(terminal_text(b"".join(events)))
    text = "\n".join(parts)
    planted = emu.planted_secrets()
    assert planted and [value for value in planted if value not in text] == []
    encrypted_text = "\n".join(decrypt_body(key, q) for q in queries if q.encrypted)
    assert any(value in encrypted_text for value in planted)


def test_planted_values_are_seeded_and_distinct() -> None:
    def planted(seed: int) -> set[str]:
        options = EmulatorOptions(records=400, secret_fraction=0.3, seed=seed)
        factory = DataFactory(options, NOW)
        factory.initial_rows("queries", NOW)
        return factory.planter.planted()

    first, again, other = planted(3), planted(3), planted(4)
    assert first == again and len(first) > 50
    assert not first & other
