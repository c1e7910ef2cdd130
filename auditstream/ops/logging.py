"""structlog set-up: JSON lines for machines, readable lines on a terminal, secrets never.

Everything goes through one stdlib handler on stderr (stdout belongs to the stdout sink's
events), so the lines of libraries (aiohttp, asyncio) come out in the same format as ours.
Every line carries ``logger``; lines written inside a stream's poller or a sink's tasks
carry ``stream`` / ``sink`` from context variables the engine binds on those tasks.

Last line of defence: every string of every line, exception tracebacks included, goes
through the one scrubber of :mod:`auditstream.ops.secrets`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO

import structlog

from auditstream.ops.secrets import active, scrub

LogFormat = Literal["auto", "json", "console"]


def scrub_secrets(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: replace every registered secret with ``[redacted]``."""
    if not active():
        return event_dict
    return {key: scrub(value) for key, value in event_dict.items()}


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def configure_logging(level: str = "info", fmt: LogFormat = "auto", stream: TextIO | None = None) -> None:
    """Logs go to stderr (or ``stream``): JSON unless ``fmt`` says otherwise or it is a TTY."""
    out = sys.stderr if stream is None else stream
    use_json = fmt == "json" or (fmt == "auto" and not _is_tty(out))
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name, timestamper],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            scrub_secrets,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.set_name("auditstream")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "auditstream"]:
        root.removeHandler(old)
    root.addHandler(handler)
    numeric = getattr(logging, level.upper())
    root.setLevel(numeric)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            timestamper,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
