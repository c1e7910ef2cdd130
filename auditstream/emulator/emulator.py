"""The in-process emulator: data, gRPC server, live traffic, and the ground truth API.

Typical use in an async test::

    async with Emulator(EmulatorOptions(records=500)) as emu:
        client = MyClient(emu.address, emu.options.access_key, emu.options.secret_key)
        ...
        assert received == emu.all_keys("activities")

For code under test that runs its own event loop or is synchronous (the official SDK),
use :func:`auditstream.emulator.threaded.running_emulator`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import logging
import random
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from auditstream.emulator.data.factory import DataFactory
from auditstream.emulator.data.replays import Event
from auditstream.emulator.live import LiveFeed, schedule_open_sessions
from auditstream.emulator.logkey import LogKey, resolve_log_key
from auditstream.emulator.options import EmulatorOptions
from auditstream.emulator.server import ListService
from auditstream.emulator.stats import EmulatorStats
from auditstream.emulator.store import Store
from auditstream.emulator.truthfile import write_truth_file

log = logging.getLogger(__name__)


class Emulator:
    """A StrongDM API emulator listening on ``options.host:options.port``."""

    def __init__(self, options: EmulatorOptions | None = None) -> None:
        self.options = options or EmulatorOptions()
        self.store = Store(self.options.queries_time)
        self.stats = EmulatorStats()
        self.factory: DataFactory | None = None
        self.log_key: LogKey | None = None
        self.live: LiveFeed | None = None
        self._server: grpc.aio.Server | None = None
        self._live_task: asyncio.Task[None] | None = None
        self._port = 0
        self._stopped = False

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Generate the data set, then accept calls; returns once calls are accepted.

        Raises ``logkey.LogKeyError`` (a ValueError) when ``log_key_file`` cannot be used,
        and OSError when it cannot listen.
        """
        options = self.options
        now = time.time_ns()
        self.log_key = await asyncio.to_thread(resolve_log_key, options)  # RSA work: only when encrypting
        self.factory = await asyncio.to_thread(DataFactory, options, now, self.log_key)
        await asyncio.to_thread(self._populate, self.factory, now)
        schedule_open_sessions(
            self.store, self.factory, options, random.Random(f"sessions:{options.seed}"), now
        )
        # no SO_REUSEPORT: a second emulator on a taken port must fail, not share the traffic
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        service = ListService(self.store, options, self.stats, self.factory.replays)
        server.add_generic_rpc_handlers(service.generic_handlers())
        address = _join_host_port(options.host, options.port)
        credentials = await asyncio.to_thread(_server_credentials, options)
        try:
            if credentials is not None:
                port = server.add_secure_port(address, credentials)
            else:
                port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {_join_host_port(options.host, options.port)}: {exc}") from None
        if port == 0:
            raise OSError(f"cannot listen on {_join_host_port(options.host, options.port)}")
        await server.start()
        self._server, self._port = server, port
        if options.live > 0:
            self.live = LiveFeed(self.store, self.factory, options)
            self._live_task = asyncio.create_task(self.live.run(), name="emulator-live")

    def _populate(self, factory: DataFactory, now: int) -> None:
        # Millions of short-lived Row tuples would trigger the cyclic GC over and over
        # (half the build time); none of them can be part of a cycle.
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            for name in self.options.streams:
                self.store.load(name, factory.initial_rows(name, now))
        finally:
            if was_enabled:
                gc.enable()

    async def stop(self, grace: float = 0.5) -> None:
        """Stop serving (in-flight calls get ``grace`` seconds) and write the truth file."""
        if self._stopped:
            return
        self._stopped = True
        if self._live_task is not None:
            self._live_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._live_task
        if self._server is not None:
            await self._server.stop(grace)
        if self.options.truth_file:
            count = await asyncio.to_thread(write_truth_file, self.store, self.options.truth_file)
            log.info("wrote %d records to truth file %s", count, self.options.truth_file)

    async def live_done(self) -> None:
        """Wait until ``live_for`` seconds of live traffic have been produced."""
        if self._live_task is not None:
            await asyncio.shield(self._live_task)

    @property
    def live_finished(self) -> bool:
        """True once live generation, if any, has produced its ``live_for`` seconds.

        Safe to read from another thread (tests driving a subprocess daemon poll it).
        """
        return self._live_task is None or self._live_task.done()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # --- where -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> str:
        """``host:port`` to give a client (the SDK's ``host=`` argument)."""
        return _join_host_port(self.options.host, self._port)

    # --- ground truth ------------------------------------------------------------------

    def truth(self, stream: str) -> list[tuple[str, int]]:
        """``(key, time_ns)`` of every record of ``stream`` visible now."""
        return self.store.truth(stream)

    def filter_truth(self, stream: str) -> list[tuple[str, int]]:
        """``(key, time the after:/before: filter compares)`` of every visible record."""
        return self.store.filter_truth(stream)

    def all_keys(self, stream: str) -> set[str]:
        return self.store.all_keys(stream)

    def insert(self, stream: str, record: Any, visible_at: dt.datetime | int | None = None) -> str:
        """Add an SDK protobuf record; it is listed from ``visible_at`` on (default: now)."""
        return self.store.insert(stream, record, visible_at)

    def _data(self) -> DataFactory:
        if self.factory is None:
            raise RuntimeError("the emulator has not started: it has no data yet")
        return self.factory

    def replayable_query_ids(self) -> set[str]:
        """Ids of the completed sessions that have replay chunks (``Replays.List`` lists them).

        Exactly the visible completion records with ``replayable`` true, plus the encrypted
        sessions whose decrypted capture type is replayable. A session still open has chunks
        once its completion record is listed.
        """
        ids = self._data().replays.ids()
        completed = self.store.all_keys("queries")
        return ids & completed

    def replay_commands(self, query_id: str) -> list[str]:
        """The commands typed in a session, as a reader of its decoded terminal text sees them
        (a typo erased with backspace is not in them); [] for an RDP session.

        Raises KeyError for a query without a replay.
        """
        replay = self._data().replays.replay(query_id)
        if replay is None:
            raise KeyError(query_id)
        return replay.commands

    def replay_events(self, query_id: str) -> list[list[Event]]:
        """The events of each chunk of a session, in clear: ``(data, duration in ms)``.

        For an encrypted session, what its chunks' ``data`` decrypts to. Raises KeyError for
        a query without a replay.
        """
        replay = self._data().replays.replay(query_id)
        if replay is None:
            raise KeyError(query_id)
        return replay.chunks

    def encrypted_query_ids(self) -> set[str]:
        """Ids of every query generated encrypted (visible or still to be listed)."""
        return self._data().queries.encrypted_ids()

    def encrypted_plaintext(self, query_id: str) -> str:
        """What an encrypted query's ``query_body`` decrypts to: the SQL text, or a session's
        capture as JSON. Raises KeyError for a query that is not encrypted."""
        encrypted = self._data().queries.encrypted(query_id)
        if encrypted is None:
            raise KeyError(query_id)
        return encrypted.plaintext

    def planted_secrets(self) -> set[str]:
        """Every secret value planted so far (``secret_fraction``): in query bodies, captures
        and replays served or to be served. Search any output for each, in clear and base64."""
        return self._data().planter.planted()

    @property
    def log_private_key_pem(self) -> bytes:
        """The organisation's private key (PKCS#8 PEM) for configuring the daemon.

        Raises RuntimeError when queries are not encrypted, or ``log_key_file`` holds only
        a public key.
        """
        if self.log_key is None or self.log_key.private_pem is None:
            raise RuntimeError("no private log key: encrypted_fraction is 0 or log_key_file is a public key")
        return self.log_key.private_pem


def _server_credentials(options: EmulatorOptions) -> grpc.ServerCredentials | None:
    if not (options.tls_cert_file and options.tls_key_file):
        return None
    chain = Path(options.tls_cert_file).read_bytes()
    key = Path(options.tls_key_file).read_bytes()
    return grpc.ssl_server_credentials([(key, chain)])


def _join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
