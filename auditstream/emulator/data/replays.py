"""Session replays (``Replays.List``): terminal and RDP recordings, generated on demand.

A replay is a list of chunks, each a list of events ``(bytes, duration)``. Terminal
sessions are what a pty really emits, so a daemon that turns replays into text meets the
hard cases: coloured bash prompts and an OSC window title before each of them, commands
echoed one keystroke per event, a typo erased with backspace, ``\\r`` progress bars that
redraw one line, CRLF line ends, a ``clear`` (CSI), and multi-byte UTF-8 characters split
across two events, sometimes across two chunks. RDP sessions are opaque binary frames.

Nothing is stored per session but a reference to its (pooled) profile: the content is a
pure function of the emulator's seed and the query id, rebuilt when asked for (a small
LRU cache serves the pages of one listing), so a million-query data set does not hold
its replays in memory. Two seeded generators per session keep the *plan* (which
commands, which secrets) cheap to recompute on its own: planting secrets at start-up
never renders a session.

``replayable`` is true on a query exactly when its capture type is in
``REPLAYABLE_CAPTURE_TYPES`` (the daemon's rule too, ``formats.decryption``); those sessions
and only those have chunks. An encrypted session's chunks carry no events: ``data`` holds
the events encrypted with the query's own key, and ``symmetric_key`` is its ``query_key``.
"""

from __future__ import annotations

import random
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from strongdm import constants, replays_pb2

from auditstream.emulator.data import secrets as sec

if TYPE_CHECKING:
    from auditstream.emulator.crypto import QueryEncryptor

C = constants.CaptureType

# Same set as auditstream.formats.decryption.REPLAYABLE_CAPTURE_TYPES (a test keeps them
# equal); not imported from there, which would load the cryptography package at start-up.
REPLAYABLE_CAPTURE_TYPES = frozenset({C.SHELL, C.K_8_S_EXEC, C.K_8_S_EXEC_TTY, C.RDP_BASIC, C.RDP_ENHANCED})
TERMINAL_CAPTURE_TYPES = frozenset({C.SHELL, C.K_8_S_EXEC, C.K_8_S_EXEC_TTY})

Event = tuple[bytes, int]  # (data, duration in milliseconds since the previous event)

GREEN, BLUE, RESET = "\x1b[01;32m", "\x1b[01;34m", "\x1b[00m"
ERASE_BACK = b"\x08\x1b[K"  # readline's echo of a backspace at the end of the line
CLEAR = "\x1b[H\x1b[2J\x1b[3J"
UTF8_LINES = (
    "# Notes d'exploitation",
    "- Redémarrer le service après la mise à jour ✓",
    "- Contact : José Müller — équipe SRE 🚀",
    "- ログを確認してください (日本語)",
    "- Ελέγξτε τα αρχεία καταγραφής",
)


@dataclass(frozen=True, slots=True)
class SessionProfile:
    """What a recording needs to know about its session (shared by pooled query bodies)."""

    capture_type: str
    user: str  # the remote user (SSH) or the container's (Kubernetes)
    host: str  # the machine's short hostname, or the pod
    width: int = 80
    height: int = 24

    @property
    def terminal(self) -> bool:
        return self.capture_type in TERMINAL_CAPTURE_TYPES


@dataclass(frozen=True, slots=True)
class EncryptedQuery:
    """A query encrypted to the organisation's key: enough to encrypt its replay too."""

    aes_key: bytes
    query_key: str  # base64 of the RSA-OAEP wrap of aes_key, as on the wire
    plaintext: str  # what query_body decrypts to


@dataclass
class Step:
    """One command of a planned terminal session."""

    command: str  # as a reader of the terminal sees it once it is typed
    output: list[str] = field(default_factory=list)  # lines, without line ends
    secrets: tuple[str, ...] = ()
    paste: list[str] = field(default_factory=list)  # heredoc lines pasted after the command
    progress: bool = False  # a download with a \r progress bar
    utf8: bool = False  # output with multi-byte characters, one split across two events
    clear: bool = False  # the screen is cleared
    cwd: str | None = None  # the new working directory (cd)


class Plan(NamedTuple):
    steps: list[Step]
    secrets: tuple[str, ...]


class Replay(NamedTuple):
    commands: list[str]
    chunks: list[list[Event]]


# --- what people type ----------------------------------------------------------------


def _ls(rng: random.Random) -> list[str]:
    names = ("app.env", "config.yaml", "deploy.sh", "logs", "releases", "current", "shared")
    rows = ["total 28"]
    for name in rng.sample(names, 5):
        kind = "d" if "." not in name else "-"
        rows.append(
            f"{kind}rw{'x' if kind == 'd' else '-'}r-xr-x  2 deploy deploy {rng.randrange(96, 9000):>5} "
            f"May {rng.randint(1, 28):>2} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d} {name}"
        )
    return rows


def _syslog(rng: random.Random) -> list[str]:
    units = ("nginx[812]", "app[2211]", "systemd[1]", "sshd[40121]", "CRON[5512]")
    messages = ("worker ready", "GET /healthz 200", "session opened")
    lines = []
    for _ in range(rng.randint(3, 6)):
        clock = f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
        lines.append(f"May {rng.randint(1, 28)} {clock} web-01 {rng.choice(units)}: {rng.choice(messages)}")
    return lines


Output = Callable[[random.Random], list[str]]
DF_HEADER = "Filesystem      Size  Used Avail Use% Mounted on"
FREE_HEADER = "               total        used        free      shared  buff/cache   available"
PS_HEADER = "USER         PID %CPU %MEM    VSZ   RSS TTY      STAT START   TIME COMMAND"
# (command, output builder)
SHELL_CATALOGUE: tuple[tuple[str, Output], ...] = (
    ("uptime", lambda r: [f" {r.randint(0, 23):02d}:{r.randint(0, 59):02d}:07 up {r.randint(2, 90)} days,"
                          "  3:12,  1 user,  load average: 0.42, 0.37, 0.31"]),
    ("df -h /", lambda r: [DF_HEADER,
                           f"/dev/nvme0n1p1   97G   {r.randint(10, 90)}G   31G  {r.randint(10, 95)}% /"]),
    ("free -m", lambda r: [FREE_HEADER,
                           f"Mem:            7841        {r.randint(900, 7000)}         512          12"
                           "        2200        4100"]),
    ("ls -la", _ls),
    ("tail -n 5 /var/log/syslog", _syslog),
    ("sudo systemctl status nginx --no-pager", lambda r: [
        "\u25cf nginx.service - A high performance web server and a reverse proxy server",
        "     Loaded: loaded (/lib/systemd/system/nginx.service; enabled; vendor preset: enabled)",
        f"     Active: active (running) since Tue 2024-05-{r.randint(10, 28)} 09:12:44 UTC; 3 days ago"]),
    ("git log --oneline -3", lambda r: [f"{r.getrandbits(28):07x} {m}" for m in
                                        ("fix: retry on 503", "feat: export to S3", "chore: bump deps")]),
    ("ps aux --sort=-%mem | head -3", lambda r: [
        PS_HEADER,
        f"app         {r.randint(1000, 9999)} 12.1 31.4 2811232 2561024 ?   Ssl  May01 410:12 "
        "/srv/app/bin/app",
        f"postgres    {r.randint(1000, 9999)}  0.4  6.2 421000 512000 ?     Ss   May01   9:41 postgres"]),
    ("grep -c ERROR /var/log/app/app.log", lambda r: [str(r.randint(0, 40))]),
    ("docker ps --format '{{.Names}}\\t{{.Status}}'", lambda r: [
        f"api-{i}\tUp {r.randint(1, 20)} days" for i in range(1, r.randint(2, 4))]),
    ("cat /etc/os-release | head -2", lambda r: ['PRETTY_NAME="Ubuntu 22.04.4 LTS"', 'NAME="Ubuntu"']),
    ("sudo journalctl -u app --since '10 min ago' --no-pager | tail -2", _syslog),
)  # fmt: skip
POD_CATALOGUE: tuple[tuple[str, Output], ...] = (
    ("env | grep ^APP_", lambda r: ["APP_ENV=production", f"APP_WORKERS={r.randint(2, 16)}"]),
    ("ls /app", lambda r: ["bin  config  migrations  public  vendor"]),
    ("curl -s localhost:8080/healthz", lambda r: [f'{{"status":"ok","uptime_s":{r.randrange(10**6)}}}']),
    ("cat /app/config/app.yaml | head -3", lambda r: ["server:", "  port: 8080",
                                                      f"  workers: {r.randint(2, 9)}"]),
    ("ps aux", lambda r: ["PID   USER     TIME  COMMAND", "    1 app       3:12 /app/bin/api",
                          "   42 root      0:00 sh"]),
    ("df -h /tmp", lambda r: [DF_HEADER, "overlay          20G  4.1G   16G  21% /"]),
)  # fmt: skip
DOWNLOAD = "wget https://releases.acme.example/agent/agent-{v}-linux-amd64.tar.gz"
UTF8_COMMAND = "cat NOTES.md"
PEM_PATH = "~/.ssh/deploy_key"


def _catalogue_step(rng: random.Random, catalogue: tuple[tuple[str, Output], ...]) -> Step:
    command, build = rng.choice(catalogue)
    return Step(command, build(rng))


def _secret_step(rng: random.Random) -> Step:
    planted = sec.shell_command(rng)
    word = planted.text.split()[0]
    output = {
        "mysql": ["mysql: [Warning] Using a password on the command line interface can be insecure.",
                  "Database", "information_schema", "app", "mysql"],
        "psql": [" count ", "-------", f" {rng.randrange(10**6)}", "(1 row)", ""],
        "sshpass": [f" 10:21:07 up {rng.randint(2, 90)} days,  1 user,  load average: 0.08, 0.11, 0.09"],
        "curl": ['{"users":[{"id":1,"email":"alice@acme.example"}],"next":null}'],
        "mongosh": ['{ db: "admin", collections: 3, objects: 17 }'],
        "redis-cli": ["# Keyspace", f"db0:keys={rng.randrange(10**5)},expires=12,avg_ttl=0"],
    }.get(word, [])  # fmt: skip
    if word.startswith("PGPASSWORD"):
        output = [" count ", "-------", f" {rng.randrange(10**6)}", "(1 row)", ""]
    return Step(planted.text, output, planted.secrets)


def _pem_step(rng: random.Random) -> Step:
    lines = sec.pem_private_key_lines(rng)
    paste = [sec.PEM_BEGIN, *lines, sec.PEM_END, "EOF"]
    return Step(f"cat > {PEM_PATH} <<'EOF'", [], tuple(lines), paste=paste)


def plan_session(profile: SessionProfile, rng: random.Random, planter: sec.SecretPlanter) -> Plan:
    """The commands of one terminal session (RDP sessions have none), and their secrets."""
    if not profile.terminal:
        return Plan([], ())
    pod = profile.capture_type != C.SHELL
    catalogue = POD_CATALOGUE if pod else SHELL_CATALOGUE
    steps: list[Step] = []
    for _ in range(rng.randint(3, 10)):
        if planter.draw(rng):
            if not pod and rng.random() < 0.15:
                steps.append(_pem_step(rng))
                steps.append(Step(f"chmod 600 {PEM_PATH}"))
            else:
                steps.append(_secret_step(rng))
        else:
            steps.append(_catalogue_step(rng, catalogue))
    extras: list[Step] = []
    if not pod and rng.random() < 0.3:
        extras.append(Step("cd /srv/app", cwd="/srv/app"))
    if rng.random() < 0.7:
        extras.append(Step(DOWNLOAD.format(v=f"2.{rng.randint(1, 30)}.{rng.randint(0, 9)}"), progress=True))
    if rng.random() < 0.6:
        extras.append(Step(UTF8_COMMAND, list(UTF8_LINES[: rng.randint(3, len(UTF8_LINES))]), utf8=True))
    if rng.random() < 0.2:
        extras.append(Step("clear", clear=True))
    for extra in extras:
        steps.insert(rng.randint(0, len(steps)), extra)
    steps.append(Step("exit"))
    secrets = tuple(s for step in steps for s in step.secrets)
    return Plan(steps, secrets)


# --- what the pty emits ----------------------------------------------------------------


class _Tape:
    """Events as a terminal recorder writes them, plus where a chunk must end."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.events: list[Event] = []
        self.cuts: set[int] = set()  # a chunk ends after events[i]

    def emit(self, data: bytes | str, low: int, high: int) -> None:
        raw = data.encode() if isinstance(data, str) else data
        self.events.append((raw, self.rng.randint(low, high)))

    def lines(self, lines: list[str], eol: str) -> None:
        i = 0
        while i < len(lines):
            n = self.rng.randint(1, 4)
            self.emit("".join(line + eol for line in lines[i : i + n]), 1, 60)
            i += n

    def split_utf8(self, lines: list[str], eol: str) -> None:
        """Emit ``lines`` with one multi-byte character cut between two events."""
        raw = "".join(line + eol for line in lines).encode()
        starts = [i for i, b in enumerate(raw) if b >= 0xC0]  # lead bytes of multi-byte chars
        cut = self.rng.choice(starts) + 1  # after the lead byte: both halves are invalid alone
        self.emit(raw[:cut], 1, 40)
        if self.rng.random() < 0.6:
            self.cuts.add(len(self.events) - 1)
        self.emit(raw[cut:], 1, 40)


def _typo_position(step: Step, rng: random.Random) -> int | None:
    """Where a typo can go: not inside a secret (a masker sees the secret in one piece)."""
    text = step.command
    covered: set[int] = set()
    for secret in step.secrets:
        at = text.find(secret)
        if at >= 0:
            covered.update(range(at, at + len(secret)))
    choices = [i for i, ch in enumerate(text) if ch.isalpha() and i not in covered and i > 0]
    return rng.choice(choices) if choices else None


def _type(tape: _Tape, text: str, typo_at: int | None) -> None:
    """Echo ``text`` a keystroke per event (two now and then: a pty read caught both)."""
    rng = tape.rng
    i = 0
    while i < len(text):
        if i == typo_at:
            wrong = rng.choice([c for c in "asdfghjklqwertyuiop" if c != text[i]])
            tape.emit(wrong, 40, 200)
            tape.emit(ERASE_BACK, 200, 700)
        n = 2 if rng.random() < 0.08 and i + 1 < len(text) and i + 1 != typo_at else 1
        tape.emit(text[i : i + n], 35, 220)
        i += n


def _progress(tape: _Tape, step: Step) -> None:
    name = step.command.rsplit("/", 1)[-1]
    size = tape.rng.randint(8, 40)
    quoted = f"\u2018{name}\u2019"  # wget quotes file names with curly quotes: more multi-byte text
    length = size * 1_048_576
    tape.lines([
        "Resolving releases.acme.example... 203.0.113.10",
        "HTTP request sent, awaiting response... 200 OK",
        f"Length: {length} ({size}M) [application/gzip]",
        f"Saving to: {quoted}",
        "",
    ], "\r\n")  # fmt: skip
    done = 0
    while done < 100:
        done = min(100, done + tape.rng.randint(7, 30))
        bar = "=" * (done // 5) + (">" if done < 100 else "=")
        tape.emit(f"\r{name[:20]:<20} {done:>3}%[{bar:<21}] {size * done / 100:6.2f}M  2.41MB/s", 150, 600)
    tape.emit(f"    in {size / 2.4:.1f}s \r\n\r\n{quoted} saved [{length}/{length}]\r\n\r\n", 1, 20)


def render_terminal(profile: SessionProfile, plan: Plan, rng: random.Random) -> _Tape:
    """The pty output of a planned session; without a TTY (``k8s-exec``) no prompt and no
    echo: stdin lines are recorded as entered, and lines end with LF only."""
    tape = _Tape(rng)
    tty = profile.capture_type != C.K_8_S_EXEC
    eol = "\r\n" if tty else "\n"
    ssh = profile.capture_type == C.SHELL
    cwd = "~" if ssh else "/app"
    if ssh:
        tape.emit(
            "Welcome to Ubuntu 22.04.4 LTS (GNU/Linux 6.5.0-1020-aws x86_64)\r\n\r\n"
            " * Documentation:  https://help.ubuntu.com\r\n\r\n"
            f"Last login: Tue May 14 0{rng.randint(0, 9)}:12:01 2024 from 10.0.{rng.randint(0, 255)}.7\r\n",
            5,
            80,
        )
    typo_step = rng.randrange(len(plan.steps) - 1) if len(plan.steps) > 1 else None
    for index, step in enumerate(plan.steps):
        if tty:
            if ssh:
                title = f"\x1b]0;{profile.user}@{profile.host}: {cwd}\x07"
                prompt = f"{GREEN}{profile.user}@{profile.host}{RESET}:{BLUE}{cwd}{RESET}$ "
            else:
                title, prompt = "", f"{profile.user}@{profile.host}:{cwd}# "
            tape.emit(title + prompt, 300, 4000)
            typo = _typo_position(step, rng) if index == typo_step else None
            _type(tape, step.command, typo)
            tape.emit("\r\n", 80, 400)
        else:
            tape.emit(step.command + "\n", 800, 6000)  # stdin, as one line
        if step.paste:
            tape.emit("> ", 1, 5)
            for line in step.paste:
                ending = eol if line == "EOF" else eol + "> "
                tape.emit(line + ending, 1, 8)
        if step.cwd is not None:
            cwd = step.cwd
        if step.clear:
            tape.emit(CLEAR, 1, 10)
        if step.progress:
            _progress(tape, step)
        elif step.utf8:
            tape.split_utf8(step.output, eol)
        elif step.output:
            tape.lines(step.output, eol)
        if step.command == "exit" and tty:
            tape.emit("logout" + eol, 1, 20)
    return tape


def _chunks(tape: _Tape) -> list[list[Event]]:
    """Group events into chunks (up to 30 events, a handful of chunks at least), ending one
    where the tape asks to."""
    rng, events = tape.rng, tape.events
    high = max(2, min(30, len(events) // 4))
    low = max(1, min(6, high // 2))
    chunks: list[list[Event]] = []
    current: list[Event] = []
    target = rng.randint(low, high)
    for i, event in enumerate(events):
        current.append(event)
        if len(current) >= target or i in tape.cuts:
            chunks.append(current)
            current, target = [], rng.randint(low, high)
    if current:
        chunks.append(current)
    return chunks


def _rdp_chunks(rng: random.Random) -> list[list[Event]]:
    return [
        [(rng.randbytes(rng.randint(256, 4096)), rng.randint(16, 500)) for _ in range(rng.randint(2, 5))]
        for _ in range(rng.randint(2, 6))
    ]


def build_replay(profile: SessionProfile, plan: Plan, rng: random.Random) -> Replay:
    if not profile.terminal:
        return Replay([], _rdp_chunks(rng))
    tape = render_terminal(profile, plan, rng)
    return Replay([step.command for step in plan.steps], _chunks(tape))


def serialize_chunks(
    chunks: list[list[Event]], encrypted: EncryptedQuery | None, encryptor: QueryEncryptor | None
) -> list[bytes]:
    """Wire form: events in clear, or (encrypted session) ``data`` + ``symmetric_key`` only."""
    out = []
    for events in chunks:
        chunk = replays_pb2.ReplayChunk()
        if encrypted is not None:
            assert encryptor is not None
            chunk.data = encryptor.encrypt_replay_events(encrypted.aes_key, events)
            chunk.symmetric_key = encrypted.query_key
        else:
            for data, ms in events:
                event = chunk.events.add(data=data)
                event.duration.FromMilliseconds(ms)
        out.append(chunk.SerializeToString())
    return out


# --- the book of sessions ----------------------------------------------------------------


class ReplayBook:
    """Every session that has (or will have, once it completes) a replay, by query id.

    Holds one reference per session; content is rebuilt from ``(seed, query id)``. Safe
    to call from any thread (the server's loop, tests).
    """

    def __init__(
        self,
        seed: int,
        planter: sec.SecretPlanter,
        encryptor: QueryEncryptor | None = None,
        cache_size: int = 64,
    ) -> None:
        self._seed = seed
        self._planter = planter
        self._encryptor = encryptor
        self._sessions: dict[str, tuple[SessionProfile, EncryptedQuery | None]] = {}
        self._cache: OrderedDict[str, list[bytes]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def register(self, query_id: str, profile: SessionProfile, encrypted: EncryptedQuery | None) -> None:
        """Record a replayable session; plants the secrets its commands will carry."""
        with self._lock:
            self._sessions[query_id] = (profile, encrypted)
        if self._planter.fraction > 0 and profile.terminal:
            self._planter.plant(self._plan(query_id, profile).secrets)

    def __contains__(self, query_id: object) -> bool:
        with self._lock:
            return query_id in self._sessions

    def ids(self) -> set[str]:
        with self._lock:
            return set(self._sessions)

    def _plan(self, query_id: str, profile: SessionProfile) -> Plan:
        return plan_session(profile, random.Random(f"replay-plan:{self._seed}:{query_id}"), self._planter)

    def replay(self, query_id: str) -> Replay | None:
        """The session's commands and its chunks' events in clear (None: no such session)."""
        with self._lock:
            entry = self._sessions.get(query_id)
        if entry is None:
            return None
        profile = entry[0]
        render_rng = random.Random(f"replay-render:{self._seed}:{query_id}")
        return build_replay(profile, self._plan(query_id, profile), render_rng)

    def encrypted(self, query_id: str) -> EncryptedQuery | None:
        with self._lock:
            entry = self._sessions.get(query_id)
        return None if entry is None else entry[1]

    def wire_chunks(self, query_id: str) -> list[bytes]:
        """The serialized ``ReplayChunk`` messages of a session ([] for an unknown id)."""
        with self._lock:
            cached = self._cache.get(query_id)
            if cached is not None:
                self._cache.move_to_end(query_id)
                return cached
        replay = self.replay(query_id)
        if replay is None:
            return []
        chunks = serialize_chunks(replay.chunks, self.encrypted(query_id), self._encryptor)
        with self._lock:
            self._cache[query_id] = chunks
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return chunks
