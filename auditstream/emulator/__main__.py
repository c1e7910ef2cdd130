"""``python -m auditstream.emulator``: the same command as ``auditstream emulator``."""

from __future__ import annotations

import argparse
import asyncio
import sys

from auditstream.emulator.command import add_arguments, run_command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="auditstream emulator", description="Serve an emulated StrongDM audit API over gRPC."
    )
    add_arguments(parser)
    return asyncio.run(run_command(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
