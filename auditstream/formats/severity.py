"""Default CEF severity (0-10) of an event, before any configured override.

StrongDM has ~250 activity verbs and adds more with every release, so defaults are keyword
rules over the verb text rather than a table that would silently miss new verbs. The first
matching rule wins; an unmatched verb gets the configured ``default_severity``.

The ordering encodes the policy: tampering with the audit trail itself is the most severe;
then credential and token creation, deletions and suspensions (hard to undo, often part of an
attack's clean-up); then authentication failures and lockouts; then privilege changes; then
ordinary creations and updates; sessions, expiries and other informational events are low.
"""

from __future__ import annotations

import re

# (pattern over the lower-cased verb, severity); first match wins.
ACTIVITY_RULES: tuple[tuple[re.Pattern[str], int], ...] = tuple(
    (re.compile(pattern), severity)
    for pattern, severity in (
        # Audit trail tampering: logging, log stream, replays, query-encryption key.
        (r"logging configuration|log stream setting|discard replays|public key updated", 9),
        # Role membership both ways is a privilege change, not a deletion of anything.
        (r"added to role|deleted from role", 6),
        # Credentials and tokens created or exposed.
        (r"token created|token cloned|rekeyed|api key revealed|credential created|certificate authority", 8),
        # Destructive or account-disabling changes.
        (r"deleted|removed|revoked|suspended|uninstalled|deauthorized|force-unlocked|remove child", 8),
        # Authentication failures and lockouts.
        (r"failed login attempt from|mfa denied|locked due to|attempt(ed)? to (login|enroll)", 7),
        # Privilege and security-setting changes.
        (
            r"access rules|granted|approved|permission|user type changed|reinstated|password|"
            r"provisioning|provider|port forwarding|organization setting|self-registration|"
            r"via sso|parent admin|child organization",
            6,
        ),
        # Sessions, invitations, expiries and other routine or automatic events.
        (
            r"logged into|logged out|signup|invited|clicked|expired|requested|canceled|timed out|"
            r"denied|unlocked|locked a|lock extended|extended a \w+ lock|lock rejected|step skipped|"
            r"counter reset|totp|trial extended",
            3,
        ),
        # Everything else that creates or changes configuration.
        (
            r"added|created|updated|enabled|disabled|changed|set|installed|cloned|assigned|"
            r"attached|detached|linked|overriden|allocated|rotated|toggled|activate|completed|authorized|upserted",
            5,
        ),
    )
)

# Non-activity streams: queries are routine; a history record is a configuration change,
# and one that records a deletion ranks like a deleting activity's default.
QUERY_SEVERITY = 3
HISTORY_SEVERITY = 3
HISTORY_DELETED_SEVERITY = 6


def activity_severity(verb: str) -> int | None:
    """The built-in severity of an activity verb, None when no rule matches."""
    lowered = verb.lower()
    for pattern, severity in ACTIVITY_RULES:
        if pattern.search(lowered):
            return severity
    return None
