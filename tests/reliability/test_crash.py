"""SIGKILL the daemon at random moments while records arrive live: nothing is lost."""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from auditstream.emulator import EmulatorOptions, QueriesTime, running_emulator
from tests.e2e.support import daemon_config_document, missing, read_events, write_toml
from tests.helpers import wait_until

KILLS = 4
PAGE_SIZE = 200


def start_daemon(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "auditstream.cli", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )


def line_count(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as handle:
        return sum(1 for _ in handle)


@pytest.mark.reliability
@pytest.mark.parametrize("queries_time", [QueriesTime.COMPLETED, QueriesTime.START])
def test_sigkill_at_random_points_loses_nothing(tmp_path, queries_time):
    rng = random.Random(f"crash-{queries_time.value}")
    options = EmulatorOptions(
        seed=7,
        records=300,
        live=60,
        live_for=15,
        late_rate=0.2,
        late_max_seconds=30,
        queries_time=queries_time,
        long_sessions=5,
        long_session_close_within=12,
        live_session_seconds=(1.0, 8.0),
    )
    out = tmp_path / "out.jsonl"
    log = tmp_path / "daemon.log"
    with running_emulator(options) as emu:
        config = write_toml(
            tmp_path / "config.toml",
            daemon_config_document(emu.address, options.access_key, options.secret_key, tmp_path),
        )
        streams = list(daemon_config_streams())
        daemon = start_daemon(config, log)
        try:
            for _ in range(KILLS):
                target = line_count(out) + rng.randint(50, 400)
                wait_until(
                    lambda t=target, d=daemon: line_count(out) >= t or d.poll() is not None, 60, "more output"
                )
                assert daemon.poll() is None, f"daemon died on its own:\n{log.read_text()[-3000:]}"
                daemon.send_signal(signal.SIGKILL)
                daemon.wait(10)
                daemon = start_daemon(config, log)
            wait_until(
                lambda: emu.live_finished and emu.store.pending_count() == 0, 60, "live generation to end"
            )

            def complete() -> bool:
                return not missing(emu, streams, read_events(out))

            wait_until(complete, 90, "every record delivered after the kills")
        finally:
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(30)
        assert code == 0, log.read_text()[-3000:]
        delivered = read_events(out)
        lost = missing(emu, streams, delivered)
    assert not lost, f"{len(lost)} records lost across {KILLS} kills"
    duplicates = sum(n - 1 for n in delivered.values() if n > 1)
    # Only what was delivered but not yet checkpointed when a kill landed is sent again:
    # at most the one batch (page) each stream had in flight.
    per_stream = collections.Counter(stream for (stream, _), n in delivered.items() for _ in range(n - 1))
    for stream, count in per_stream.items():
        assert count <= KILLS * PAGE_SIZE, f"{stream}: {count} duplicates after {KILLS} kills"
    print(f"kills={KILLS} records={len(delivered)} duplicates={duplicates} by stream={dict(per_stream)}")
    assert os.path.exists(tmp_path / "state" / "checkpoints.json")


def daemon_config_streams() -> list[str]:
    from auditstream.sdm.registry import ALL_STREAM_NAMES

    return list(ALL_STREAM_NAMES)
