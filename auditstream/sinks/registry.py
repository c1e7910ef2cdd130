"""The one place that knows every sink type: its settings model and its class."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from pydantic import Field

from auditstream.formats import Encoding
from auditstream.sinks.azure_monitor import AzureMonitorSink, AzureMonitorSinkSettings
from auditstream.sinks.base import Sink
from auditstream.sinks.cloudwatch_logs import CloudWatchLogsSink, CloudWatchLogsSinkSettings
from auditstream.sinks.datadog import DatadogSink, DatadogSinkSettings
from auditstream.sinks.delivery import DeliverySink
from auditstream.sinks.elasticsearch import ElasticsearchSink, ElasticsearchSinkSettings
from auditstream.sinks.file import FileSink, FileSinkSettings
from auditstream.sinks.http import HttpSink, HttpSinkSettings
from auditstream.sinks.observer import SinkObserver
from auditstream.sinks.s3 import S3Sink, S3SinkSettings
from auditstream.sinks.security_lake import SecurityLakeSink, SecurityLakeSinkSettings
from auditstream.sinks.splunk_hec import SplunkHecSink, SplunkHecSinkSettings
from auditstream.sinks.stdout import StdoutSink, StdoutSinkSettings
from auditstream.sinks.syslog import SyslogSink, SyslogSinkSettings

AnySinkSettings = (
    FileSinkSettings
    | StdoutSinkSettings
    | HttpSinkSettings
    | SplunkHecSinkSettings
    | SyslogSinkSettings
    | S3SinkSettings
    | CloudWatchLogsSinkSettings
    | AzureMonitorSinkSettings
    | ElasticsearchSinkSettings
    | DatadogSinkSettings
    | SecurityLakeSinkSettings
)
SinkSettings = Annotated[AnySinkSettings, Field(discriminator="type")]

# Every sink class takes (settings, encoding, *, state_dir, observer).
_SINK_CLASSES: dict[type[AnySinkSettings], Callable[..., DeliverySink]] = {
    FileSinkSettings: FileSink,
    StdoutSinkSettings: StdoutSink,
    HttpSinkSettings: HttpSink,
    SplunkHecSinkSettings: SplunkHecSink,
    SyslogSinkSettings: SyslogSink,
    S3SinkSettings: S3Sink,
    CloudWatchLogsSinkSettings: CloudWatchLogsSink,
    AzureMonitorSinkSettings: AzureMonitorSink,
    ElasticsearchSinkSettings: ElasticsearchSink,
    DatadogSinkSettings: DatadogSink,
    SecurityLakeSinkSettings: SecurityLakeSink,
}


def create_sink(
    settings: AnySinkSettings,
    encoding: Encoding = None,
    state_dir: Path = Path("."),
    observer: SinkObserver | None = None,
) -> Sink:
    """Build the sink ``settings`` describes.

    ``encoding`` is what its encoder reads (``[cef]`` and ``[ocsf]``). ``state_dir`` is where
    its dead-letter file goes unless ``dead_letter_path`` is set:
    ``<state_dir>/dead-letter/<name>.jsonl`` (the engine passes the checkpoint's directory).
    """
    sink_class = _SINK_CLASSES[type(settings)]
    return sink_class(settings, encoding, state_dir=state_dir, observer=observer)
