"""The severity of an event (0-10) under ``[cef]``'s policy, for the encoders that are not CEF.

OCSF's ``severity_id`` and ECS's ``event.severity`` come from the same rules as the CEF
header, so one record ranks alike in every format a deployment writes: a configured override
for the activity verb, then for the stream, then the built-in default (``severity``), then
``default_severity``. Only the verb or the stream is read, so each is worked out once.
"""

from __future__ import annotations

from auditstream.formats import severity
from auditstream.formats.cache import remember
from auditstream.formats.cef import CefSettings
from auditstream.sdm.registry import StreamKind

# CEF 0-10 -> OCSF severity_id: routine (the built-in 3 of sign-ins, queries and history)
# is Informational; ordinary changes (5) Low; privilege changes and deletions recorded in
# history (6) Medium; authentication failures (7) and destructive or credential-exposing
# changes (8) High; tampering with the audit trail (9) Critical. 10 is Critical too:
# OCSF's Fatal is for a failing system, not an audit record.
OCSF_SEVERITY_IDS = (1, 1, 1, 1, 2, 2, 3, 4, 4, 5, 5)
OCSF_SEVERITY_NAMES = {1: "Informational", 2: "Low", 3: "Medium", 4: "High", 5: "Critical"}


class SeverityPolicy:
    """``[cef]`` severities for any encoder: ``verb`` for activities, ``stream`` for the rest."""

    def __init__(self, settings: CefSettings | None = None) -> None:
        settings = settings or CefSettings()
        self._overrides = dict(settings.severity)
        self.default = settings.default_severity
        self._verbs: dict[tuple[str, str], int] = {}

    def verb(self, verb: str, log_type: str = "activities") -> int:
        """An activity's: the verb's override, the stream's, the built-in rule, the default."""
        known = self._verbs.get((verb, log_type))
        if known is None:
            override = self._overrides.get(verb, self._overrides.get(log_type))
            built_in = severity.activity_severity(verb)
            value = override if override is not None else self.default if built_in is None else built_in
            known = remember(self._verbs, (verb, log_type), value)
        return known

    def stream(self, log_type: str, kind: StreamKind | None, *, deleted: bool = False) -> int:
        """A query, replay, secret-log or history record's; ``kind`` None: a stream without a
        mapping (its override, else ``default_severity``)."""
        override = self._overrides.get(log_type)
        if override is not None:
            return override
        if kind is None:
            return self.default
        if kind is StreamKind.HISTORY:
            return severity.HISTORY_DELETED_SEVERITY if deleted else severity.HISTORY_SEVERITY
        return severity.QUERY_SEVERITY
