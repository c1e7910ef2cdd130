import asyncio
import os
import stat

import pytest

from auditstream.engine.checkpoint import CheckpointError, CheckpointStore, OpenQuery, StreamState


def states():
    return {
        "activities": StreamState(watermark_ns=123, delivered={"a1": 100, "a2": 200}),
        "queries": StreamState(watermark_ns=456, open_queries={"q1": OpenQuery(10, 20)}),
    }


async def test_round_trip_with_mode_0600_and_backup(tmp_path):
    store = CheckpointStore(tmp_path / "cp.json")
    await store.save(states())
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    loaded = store.load()
    assert loaded["activities"].delivered == {"a1": 100, "a2": 200}
    assert loaded["queries"].open_queries["q1"] == OpenQuery(10, 20)
    changed = states()
    changed["activities"].watermark_ns = 999
    await store.save(changed)
    assert store.load()["activities"].watermark_ns == 999
    assert store.backup.exists()
    assert CheckpointStore(store.backup).load()["activities"].watermark_ns == 123
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_absent_file_is_a_first_start(tmp_path):
    assert CheckpointStore(tmp_path / "cp.json").load() == {}


@pytest.mark.parametrize(
    "content", [b"{not json", b"[]", b'{"schema_version": 99, "streams": {}}', b'{"schema_version": 1}']
)
def test_corrupt_file_stops_with_the_file_and_the_choices(tmp_path, content):
    path = tmp_path / "cp.json"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        CheckpointStore(path).load()
    message = str(err.value)
    assert str(path) in message and ".bak" in message and "start_at" in message


def test_one_corrupt_stream_names_it_and_can_be_reset_alone(tmp_path):
    path = tmp_path / "cp.json"
    path.write_bytes(
        b'{"schema_version": 1, "streams": {"activities": {"watermark_ns": 5}, "queries": {"delivered": {}}}}'
    )
    with pytest.raises(CheckpointError, match=r"stream queries .*--reset-checkpoint queries"):
        CheckpointStore(path).load()
    states = CheckpointStore(path).load(reset=frozenset({"queries"}))
    assert list(states) == ["activities"] and states["activities"].watermark_ns == 5


def test_missing_file_with_a_backup_is_not_a_silent_fresh_start(tmp_path):
    (tmp_path / "cp.json.bak").write_bytes(b"{}")
    with pytest.raises(CheckpointError, match="missing"):
        CheckpointStore(tmp_path / "cp.json").load()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_directory_is_reported_at_start(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(CheckpointError, match="not writable"):
        CheckpointStore(locked / "cp.json").check_writable()


async def test_unwritable_directory_fails_save_without_touching_the_old_file(tmp_path):
    store = CheckpointStore(tmp_path / "cp.json")
    await store.save(states())
    before = store.path.read_bytes()
    bad = CheckpointStore(tmp_path / "not-a-dir" / "cp.json")
    (tmp_path / "not-a-dir").write_text("a file where a directory should be")
    with pytest.raises(CheckpointError, match="cannot write"):
        await bad.save(states())
    assert store.path.read_bytes() == before


async def test_concurrent_saves_all_land(tmp_path):
    store = CheckpointStore(tmp_path / "cp.json")
    shared = states()

    async def bump(i):
        shared["activities"].delivered[f"k{i}"] = i
        await store.save(shared)
        assert f"k{i}" in store.load()["activities"].delivered

    await asyncio.gather(*(bump(i) for i in range(20)))
