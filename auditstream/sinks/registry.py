"""The one place that knows every sink type: its settings model and its class."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from auditstream.formats.cef import CefSettings
from auditstream.sinks.base import Sink
from auditstream.sinks.file import FileSink, FileSinkSettings
from auditstream.sinks.stdout import StdoutSink, StdoutSinkSettings

SinkSettings = Annotated[FileSinkSettings | StdoutSinkSettings, Field(discriminator="type")]


def create_sink(settings: FileSinkSettings | StdoutSinkSettings, cef: CefSettings | None = None) -> Sink:
    if isinstance(settings, FileSinkSettings):
        return FileSink(settings, cef)
    return StdoutSink(settings, cef)
