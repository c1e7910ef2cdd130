"""Every knob of the emulator, in one frozen dataclass.

The real StrongDM API leaves several behaviours undocumented (bound semantics, result
order, page size cap, which time the Queries filter uses...). The daemon must be correct
whichever answer the service gives, so each unknown is an option here and the test-suite
plays every answer. Defaults are the most plausible reading of the documentation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum

from auditstream.emulator.credentials import DEMO_ACCESS_KEY, DEMO_SECRET_KEY
from auditstream.sdm.registry import SERVED_STREAM_NAMES
from auditstream.sdm.signing import decode_secret

SDK_DEFAULT_PAGE_SIZE = 50
"""What the server uses when ``meta.limit`` is 0, which is what the SDKs send by default."""


class Bound(StrEnum):
    """Whether a filter bound matches a record exactly at that instant."""

    INCLUSIVE = "inclusive"
    EXCLUSIVE = "exclusive"


class Order(StrEnum):
    """Order of a whole listing across its pages."""

    NEWEST = "newest"
    OLDEST = "oldest"
    UNORDERED = "unordered"


class PageOrder(StrEnum):
    """Order of the records inside one page.

    ``auto`` shuffles pages under ``Order.UNORDERED`` and keeps them sorted otherwise.
    ``sorted`` follows the listing's direction (oldest first under ``unordered``).
    """

    AUTO = "auto"
    SORTED = "sorted"
    SHUFFLED = "shuffled"


class QueriesTime(StrEnum):
    """Which time the Queries ``after:``/``before:`` filter applies to.

    ``start`` uses the record's ``timestamp``; ``completed`` uses ``completed_at`` (or the
    ``timestamp`` of an open start record, whose ``completed_at`` is empty).
    """

    START = "start"
    COMPLETED = "completed"


class SecretLogsTimeFilter(StrEnum):
    """Whether ManagedSecrets.Logs understands ``after:``/``before:`` (undocumented either way).

    ``accepted`` filters on ``created_at`` as the other streams filter on their time;
    ``refused`` answers INVALID_ARGUMENT to any time term, as the API does for a field it does
    not know, so a daemon must fall back to unfiltered listings and dedupe.
    """

    ACCEPTED = "accepted"
    REFUSED = "refused"


class ResetAt(StrEnum):
    """What ``rate_limit.reset_at`` announces (undocumented; the daemon bounds the API's clock
    by it, sdm.apiclock).

    ``bucket``: when the token bucket is full again (on success; a minute ahead with rate
    limiting off), or when one token is back (on a refusal). ``next-minute``: the next whole
    minute of the server's clock, as a fixed per-minute window resets, whatever the answer.
    """

    BUCKET = "bucket"
    NEXT_MINUTE = "next-minute"


class TimePrecision(StrEnum):
    """Precision of generated timestamps; real records carry nanoseconds."""

    NS = "ns"
    US = "us"
    MS = "ms"
    S = "s"

    @property
    def quantum_ns(self) -> int:
        return {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}[self.value]


@dataclass(frozen=True)
class EmulatorOptions:
    """Configuration of one emulator instance. Every adversity is off by default."""

    # --- network and credentials -------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 0  # 0: pick a free port; read it back from Emulator.port
    access_key: str = DEMO_ACCESS_KEY
    secret_key: str = DEMO_SECRET_KEY  # base64, as StrongDM shows it

    # --- data --------------------------------------------------------------------------
    seed: int = 1
    records: int = 1000  # in each of activities and queries
    history_records: int | None = None  # per history stream; None: max(5, records // 10)
    spread_seconds: float = 7 * 24 * 3600.0  # generated records cover this much past
    same_timestamp: int = 1  # generated records come in groups sharing one timestamp
    time_precision: TimePrecision = TimePrecision.NS
    hostile: bool = False
    streams: tuple[str, ...] = SERVED_STREAM_NAMES  # streams that get generated data
    # Fraction of datasource bodies, SSH and kubectl commands and commands typed in replays that
    # carry a planted secret (a password, token, key...): Emulator.planted_secrets() lists them.
    secret_fraction: float = 0.0

    # --- encrypted query logs ----------------------------------------------------------
    # Fraction of queries encrypted with the organisation's key (RSA-OAEP wrapped AES-256-CBC).
    encrypted_fraction: float = 0.0
    # PEM key of the organisation: a private key (Emulator.log_private_key_pem returns it) or a
    # public key (encryption only). A path that does not exist gets a new private key written
    # there (mode 0600), so a daemon in another process can read it. None: a key is generated
    # in memory at start, when encrypted_fraction > 0.
    log_key_file: str | None = None

    # --- API semantics (the unknowns) --------------------------------------------------
    after_bound: Bound = Bound.INCLUSIVE
    before_bound: Bound = Bound.EXCLUSIVE
    order: Order = Order.UNORDERED
    page_order: PageOrder = PageOrder.AUTO
    max_page_size: int = 1000
    default_page_size: int = SDK_DEFAULT_PAGE_SIZE
    short_pages: float = 0.0  # fraction of pages returned with fewer records than asked
    queries_time: QueriesTime = QueriesTime.COMPLETED
    secret_logs_time_filter: SecretLogsTimeFilter = SecretLogsTimeFilter.ACCEPTED
    reset_at: ResetAt = ResetAt.BUCKET
    activities_default_window_seconds: float = 7 * 24 * 3600.0
    max_response_bytes: int = 3_500_000  # stay under gRPC's default 4 MiB receive limit

    # --- adversities -------------------------------------------------------------------
    rate_limit: int | None = None  # requests per minute per access key; None: unlimited
    rate_limit_bucket: str = "read"
    rate_limit_burst: int | None = None  # bucket capacity; None: a full minute's worth (rate_limit)
    fault_rate: float = 0.0
    slow_fault_seconds: float = 3.0  # how long a "slow" fault stalls before failing
    latency_ms: float = 0.0
    late_rate: float = 0.0
    late_max_seconds: float = 120.0

    # --- live traffic and long-running sessions ----------------------------------------
    live: float = 0.0  # new records per second from start-up
    live_for: float | None = None  # seconds; None: forever
    live_long_session_fraction: float = 0.1  # of live queries that are long sessions
    live_session_seconds: tuple[float, float] = (2.0, 180.0)  # how long those stay open
    long_sessions: int = 0  # sessions already open at start-up
    long_session_close_within: float = 60.0
    long_session_age_seconds: tuple[float, float] = (300.0, 6 * 3600.0)

    # --- bookkeeping -------------------------------------------------------------------
    truth_file: str | None = None
    tls_cert_file: str | None = None  # PEM chain; with tls_key_file, serve TLS instead of plaintext
    tls_key_file: str | None = None

    def __post_init__(self) -> None:
        decode_secret(self.secret_key)  # fail early, without echoing the secret
        # accept the flag's spelling too ("refused"); an unknown value is a ValueError here
        time_filter = SecretLogsTimeFilter(self.secret_logs_time_filter)
        object.__setattr__(self, "secret_logs_time_filter", time_filter)
        object.__setattr__(self, "reset_at", ResetAt(self.reset_at))
        for name in (
            "short_pages",
            "fault_rate",
            "late_rate",
            "live_long_session_fraction",
            "secret_fraction",
            "encrypted_fraction",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if self.short_pages >= 1.0:
            raise ValueError("short_pages must be below 1, or no listing would ever end")
        if self.records < 0 or (self.history_records is not None and self.history_records < 0):
            raise ValueError("record counts cannot be negative")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.same_timestamp < 1:
            raise ValueError("same_timestamp must be at least 1")
        if self.max_page_size < 1 or self.default_page_size < 1:
            raise ValueError("page sizes must be at least 1")
        if self.rate_limit is not None and self.rate_limit < 1:
            raise ValueError("rate_limit must be at least 1 request per minute")
        if self.live < 0 or self.latency_ms < 0 or self.late_max_seconds < 0:
            raise ValueError("live, latency_ms and late_max_seconds cannot be negative")
        unknown = sorted(set(self.streams) - set(SERVED_STREAM_NAMES))
        if unknown:
            raise ValueError(f"unknown streams: {', '.join(unknown)}")
        for name in ("live_session_seconds", "long_session_age_seconds"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"{name} must be a (low, high) range, got {(low, high)}")

    @property
    def secret(self) -> bytes:
        return decode_secret(self.secret_key)

    @property
    def history_count(self) -> int:
        if self.history_records is not None:
            return self.history_records
        return max(5, self.records // 10)

    @property
    def shuffle_pages(self) -> bool:
        if self.page_order is PageOrder.AUTO:
            return self.order is Order.UNORDERED
        return self.page_order is PageOrder.SHUFFLED

    def replace(self, **changes: object) -> EmulatorOptions:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
