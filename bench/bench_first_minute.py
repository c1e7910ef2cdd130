"""The first minute, as a new user and an operator see it.

    python3 -m bench.bench_first_minute [--repo PATH] [--rounds 3] [--wheelhouse DIR]
                                        [--skip-demo] [--skip-run]

* **make demo on a fresh clone**: ``git clone REPO`` into a new directory, then ``make demo``
  there (it creates ``.venv`` and installs the runtime), timed until the first event line on
  stdout; also when the daemon's "auditstream starting" line comes (the install before it).
  "Wheels cached": with ``--wheelhouse DIR`` the runtime's wheels (and the setuptools the
  editable build needs) are fetched into DIR once, before the clock starts, and pip installs
  from there alone (``PIP_FIND_LINKS``, ``PIP_NO_INDEX``); without it pip's index and cache
  are used as they are (a machine whose pip cache keeps nothing downloads every time). Its
  ports are moved to free ones (``AUDITSTREAM_DEMO_API``, ``AUDITSTREAM_DEMO_METRICS``) and
  it is stopped with SIGINT after the first event.
* **run**: the emulator (``auditstream emulator --live 5``, its own process, started first and
  not timed), then ``auditstream run`` with the example configuration's ``[streams]`` and
  ``[engine]`` as shipped (poll interval 30 s, ``start_at = "now"``), a file sink and
  ``NOTIFY_SOCKET``: the time from the process start to READY=1, to ``/readyz`` 200 and to
  the first record in the file.

Prints a Markdown block for BENCHMARKS.md (it writes nothing there itself).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 300.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], object], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.01)


def stop(process: subprocess.Popen[bytes], how: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        os.killpg(process.pid, how)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# -- make demo on a fresh clone ----------------------------------------------------------------


def fill_wheelhouse(repo: Path, wheelhouse: Path) -> None:
    """The runtime's wheels and setuptools, as a pip cache would hold them after a first install."""
    wheelhouse.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "-d",
            str(wheelhouse),
            str(repo),
            "setuptools>=77",
            "wheel",  # pip before 24 adds it to a setuptools build's requirements
        ],
        check=True,
    )


def demo_round(repo: Path, python: str, wheelhouse: Path | None) -> tuple[float, float]:
    """(seconds to "auditstream starting", seconds to the first event) of one fresh clone."""
    with tempfile.TemporaryDirectory(prefix="first-minute-") as tmp:
        clone = Path(tmp) / "auditstream"
        subprocess.run(["git", "clone", "--quiet", str(repo), str(clone)], check=True)
        env = {
            **os.environ,
            "AUDITSTREAM_DEMO_API": f"127.0.0.1:{free_port()}",
            "AUDITSTREAM_DEMO_METRICS": f"127.0.0.1:{free_port()}",
            "AUDITSTREAM_DEMO_STATE": str(Path(tmp) / "state"),
        }
        env.pop("PYTHONPATH", None)  # the clone's own code, from its own .venv
        if wheelhouse is not None:
            env.update(PIP_FIND_LINKS=str(wheelhouse), PIP_NO_INDEX="1")
        started = time.monotonic()
        process = subprocess.Popen(
            ["make", "demo", f"PYTHON={python}"],
            cwd=clone,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        marks: dict[str, float] = {}
        tail: list[bytes] = []

        def watch(stream: object, what: bytes, name: str) -> None:
            for line in stream:  # type: ignore[attr-defined]
                tail.append(line)
                if name not in marks and what in line:
                    marks[name] = time.monotonic() - started

        readers = [
            threading.Thread(target=watch, args=(process.stdout, b'"logType"', "event"), daemon=True),
            threading.Thread(
                target=watch, args=(process.stderr, b"auditstream starting", "start"), daemon=True
            ),
        ]
        for reader in readers:
            reader.start()
        try:
            wait_for(lambda: "event" in marks or process.poll() is not None, "the demo's first event")
        finally:
            stop(process, signal.SIGINT)
        if "event" not in marks:
            raise SystemExit(b"".join(tail[-20:]).decode(errors="replace"))
        return marks.get("start", float("nan")), marks["event"]


# -- run: READY=1, /readyz, first record --------------------------------------------------------


@contextlib.contextmanager
def emulator(python: str, env: dict[str, str]) -> Iterator[str]:
    address = f"127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [python, "-m", "auditstream.cli", "emulator", "--listen", address, "--live", "5"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:

        def listening() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", int(address.rsplit(":", 1)[1]))) == 0

        wait_for(listening, "the emulator", 60)
        yield address
    finally:
        stop(process)


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


def run_config(address: str, tmp: Path, listen: str) -> Path:
    from auditstream.emulator import DEMO_ACCESS_KEY, DEMO_SECRET_KEY

    example = tomllib.loads((ROOT / "config" / "auditstream.example.toml").read_text())
    sections: dict[str, dict[str, object]] = {
        "source": {
            "endpoint": address,
            "access_key": DEMO_ACCESS_KEY,
            "secret_key": DEMO_SECRET_KEY,
            "insecure": True,
        },
        "streams": example["streams"],
        "engine": example["engine"],
        "checkpoint": {"path": str(tmp / "state" / "checkpoints.db")},
        "metrics": {"listen": listen},
        "logging": {"format": "json"},
    }
    lines = []
    for name, body in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {toml_value(v)}" for k, v in body.items())
    lines += ["[[sinks]]", 'type = "file"', 'name = "out"', f"path = {toml_value(str(tmp / 'out.jsonl'))}"]
    path = tmp / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_round(python: str, env: dict[str, str]) -> tuple[float, float, float]:
    """(READY=1, /readyz 200, first record) in seconds from the process start."""
    with tempfile.TemporaryDirectory(prefix="fm-") as tmp_name, emulator(python, env) as address:
        tmp = Path(tmp_name)
        listen = f"127.0.0.1:{free_port()}"
        config = run_config(address, tmp, listen)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(tmp / "n.sock"))
        notify.settimeout(0.05)
        started = time.monotonic()
        process = subprocess.Popen(
            [python, "-m", "auditstream.cli", "run", "--config", str(config)],
            env={**env, "NOTIFY_SOCKET": str(tmp / "n.sock")},
            stdout=subprocess.DEVNULL,
            stderr=(tmp / "stderr").open("wb"),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        marks: dict[str, float] = {}
        out = tmp / "out.jsonl"
        try:

            def look() -> bool:
                if process.poll() is not None:
                    raise SystemExit((tmp / "stderr").read_text())
                now = time.monotonic() - started
                with contextlib.suppress(TimeoutError):
                    if notify.recv(4096).startswith(b"READY=1"):
                        marks.setdefault("ready", now)
                if "readyz" not in marks:
                    with (
                        contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
                        urllib.request.urlopen(f"http://{listen}/readyz", timeout=1) as answer,
                    ):
                        if answer.status == 200:
                            marks["readyz"] = now
                if "record" not in marks and out.exists() and b"\n" in out.read_bytes():
                    marks["record"] = now
                return len(marks) == 3

            wait_for(look, "READY=1, /readyz 200 and the first record", 120)
        finally:
            stop(process)
            notify.close()
        return marks["ready"], marks["readyz"], marks["record"]


def summary(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f} s"
    return f"{statistics.median(values):.1f} s (median of {len(values)}; {min(values):.1f}-{max(values):.1f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=ROOT, help="the repository to clone (default: this one)")
    parser.add_argument("--python", default="python3", help="the interpreter make demo builds .venv with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--wheelhouse", type=Path, help="install from these wheels alone (filled first)")
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--skip-run", action="store_true")
    args = parser.parse_args(argv)
    rows: list[tuple[str, str, str]] = []
    if not args.skip_demo:
        if args.wheelhouse is not None:
            fill_wheelhouse(args.repo, args.wheelhouse)
        demo = [demo_round(args.repo, args.python, args.wheelhouse) for _ in range(args.rounds)]
        rows.append(
            (
                "`make demo` on a fresh clone to the daemon's start (venv + runtime install)",
                summary([d[0] for d in demo]),
                "`git clone REPO x && cd x && make demo`",
            )
        )
        rows.append(
            (
                "`make demo` on a fresh clone to the first event on stdout",
                summary([d[1] for d in demo]),
                "same",
            )
        )
    if not args.skip_run:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        runs = [run_round(sys.executable, env) for _ in range(args.rounds)]
        command = "`auditstream run --config C` (example [streams]/[engine]: poll 30 s, start_at now)"
        rows.append(("`run` to READY=1 (sd_notify)", summary([r[0] for r in runs]), command))
        rows.append(("`run` to `/readyz` 200", summary([r[1] for r in runs]), "same"))
        rows.append(
            ("`run` to the first delivered record (file sink)", summary([r[2] for r in runs]), "same")
        )
    print("| first minute | time | command |")
    print("|---|---:|---|")
    for what, value, command in rows:
        print(f"| {what} | {value} | {command} |")
    print()
    cached = f" --wheelhouse {args.wheelhouse}" if args.wheelhouse else ""
    print(
        f"Measured with `python3 -m bench.bench_first_minute --rounds {args.rounds}{cached}` "
        f"({os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} when it ended)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
