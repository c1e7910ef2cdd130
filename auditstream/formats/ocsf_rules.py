"""Which OCSF class and activity a StrongDM record is, decided once per verb or stream.

StrongDM has some 230 activity verbs and adds more with each SDK release, so (like
``severity``) the decision is a list of rules over the verb text, first match wins: a verb
added later still lands in a sensible class (most are configuration changes: Entity
Management, with its Create / Update / Delete from the verb's last word), and
``tests/formats/test_ocsf.py`` runs every verb the installed SDK knows through them against
the official schema. docs/formats.md ("OCSF") gives every row with its reason.

The classes and their captions are the OCSF 1.7.0 / 1.8.0 ones (identical for everything
used here, checked against both releases by the tests); the ECS categorization of each
(class, activity) lives here too, so both schema encoders agree on what a record is.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from auditstream.formats.cache import remember


class OcsfClass(NamedTuple):
    uid: int
    name: str  # the class caption
    category_uid: int
    category_name: str
    activities: dict[int, str]  # the activity ids used here, with their captions


IAM = (3, "Identity & Access Management")
NETWORK = (4, "Network Activity")
APPLICATION = (6, "Application Activity")

ACCOUNT_CHANGE = OcsfClass(
    3001,
    "Account Change",
    *IAM,
    {
        1: "Create",
        2: "Enable",
        3: "Password Change",
        4: "Password Reset",
        5: "Disable",
        6: "Delete",
        9: "Lock",
        10: "MFA Factor Enable",
        11: "MFA Factor Disable",
        12: "Unlock",
        99: "Other",
    },
)
AUTHENTICATION = OcsfClass(3002, "Authentication", *IAM, {1: "Logon", 2: "Logoff", 99: "Other"})
ENTITY_MANAGEMENT = OcsfClass(
    3004,
    "Entity Management",
    *IAM,
    {
        1: "Create",
        2: "Read",
        3: "Update",
        4: "Delete",
        5: "Move",
        6: "Enroll",
        7: "Unenroll",
        8: "Enable",
        9: "Disable",
        10: "Activate",
        11: "Deactivate",
        12: "Suspend",
        13: "Resume",
        99: "Other",
    },
)
USER_ACCESS = OcsfClass(
    3005, "User Access Management", *IAM, {1: "Assign Privileges", 2: "Revoke Privileges", 99: "Other"}
)
GROUP_MANAGEMENT = OcsfClass(3006, "Group Management", *IAM, {3: "Add User", 4: "Remove User", 99: "Other"})
HTTP_ACTIVITY = OcsfClass(
    4002,
    "HTTP Activity",
    *NETWORK,
    {
        1: "Connect",
        2: "Delete",
        3: "Get",
        4: "Head",
        5: "Options",
        6: "Post",
        7: "Put",
        8: "Trace",
        9: "Patch",
        99: "Other",
    },
)
RDP_ACTIVITY = OcsfClass(
    4005, "RDP Activity", *NETWORK, {3: "Connect Request", 6: "Traffic", 7: "Disconnect"}
)
SSH_ACTIVITY = OcsfClass(4007, "SSH Activity", *NETWORK, {1: "Open", 2: "Close", 6: "Traffic"})
API_ACTIVITY = OcsfClass(
    6003, "API Activity", *APPLICATION, {1: "Create", 2: "Read", 3: "Update", 4: "Delete", 99: "Other"}
)
DATASTORE_ACTIVITY = OcsfClass(6005, "Datastore Activity", *APPLICATION, {4: "Query"})

CLASSES: tuple[OcsfClass, ...] = (
    ACCOUNT_CHANGE,
    AUTHENTICATION,
    ENTITY_MANAGEMENT,
    USER_ACCESS,
    GROUP_MANAGEMENT,
    HTTP_ACTIVITY,
    RDP_ACTIVITY,
    SSH_ACTIVITY,
    API_ACTIVITY,
    DATASTORE_ACTIVITY,
)

OTHER = 99
# status_id
SUCCESS = 1
FAILURE = 2
STATUS_NAMES = {SUCCESS: "Success", FAILURE: "Failure"}


class Decision(NamedTuple):
    """What an activity verb is: its class, its activity, and its status when the verb
    itself says (None: failure for CEF's failure verbs, else success)."""

    cls: OcsfClass
    activity_id: int
    status_id: int | None = None


def _rule(
    pattern: str, cls: OcsfClass, activity_id: int, status_id: int | None = None
) -> tuple[re.Pattern[str], Decision]:
    return re.compile(pattern), Decision(cls, activity_id, status_id)


# (pattern over the lower-cased verb, decision); first match wins. Account rules come before
# the authentication ones ("failed login attempt counter reset" is about the account), the
# access-request family before the generic create/update words ("approval added" is not a
# creation), and the generic Entity Management words last.
VERB_RULES: tuple[tuple[re.Pattern[str], Decision], ...] = (
    # -- Account Change 3001: the account itself
    # The lock-out and its reset succeed as activities, though CEF marks them failure-related.
    _rule(r"counter reset", ACCOUNT_CHANGE, 12, SUCCESS),  # the lock-out counter cleared: unlocked
    _rule(r"locked due to", ACCOUNT_CHANGE, 9, SUCCESS),
    _rule(r"enrolled a totp", ACCOUNT_CHANGE, 10),
    _rule(r"reset their totp", ACCOUNT_CHANGE, 11),
    _rule(r"login via", ENTITY_MANAGEMENT, 3),  # the user's sign-in policy: a setting of the user
    _rule(r"password reset|reset their password", ACCOUNT_CHANGE, 4),
    _rule(r"password", ACCOUNT_CHANGE, 3),
    _rule(r"attempt to enroll", ACCOUNT_CHANGE, 1),  # a refused sign-up (failure: CEF's rule)
    _rule(
        r"^(user added|user signup|user invited|service account created|child organization admin invited)$",
        ACCOUNT_CHANGE,
        1,
    ),
    _rule(r"^user deleted$", ACCOUNT_CHANGE, 6),
    _rule(r"^user suspended$|^service account expired$", ACCOUNT_CHANGE, 5),
    _rule(r"^user reinstated$", ACCOUNT_CHANGE, 2),
    _rule(r"clicked on their invitation", ACCOUNT_CHANGE, OTHER),
    # -- Authentication 3002: sign-ins (refused ones too) and ended or revoked sessions
    _rule(r"logged into|login attempt|attempt(ed)? to login|mfa denied", AUTHENTICATION, 1),
    _rule(r"logged out|authentications? revoked", AUTHENTICATION, 2),
    # -- Group Management 3006: role membership (the role is the group)
    _rule(r"added to role", GROUP_MANAGEMENT, 3),
    _rule(r"(deleted|removed) from role", GROUP_MANAGEMENT, 4),
    # -- User Access Management 3005: access to a resource given or taken
    _rule(r"temporary access granted", USER_ACCESS, 1),
    _rule(r"temporary access (revoked|expired)", USER_ACCESS, 2),
    _rule(r"^access request to resource (granted|approved)", USER_ACCESS, 1),
    _rule(r"^access request to resource (denied|timed out)", USER_ACCESS, 1, FAILURE),
    # -- Entity Management 3004: the access request as an entity, then every other setting
    _rule(r"^access requested", ENTITY_MANAGEMENT, 1),
    _rule(r"^access request to resource", ENTITY_MANAGEMENT, 3),  # approval added, skipped, canceled
    _rule(r"installation approved", ENTITY_MANAGEMENT, 6),
    _rule(r"installation revoked", ENTITY_MANAGEMENT, 7),
    _rule(r"revealed", ENTITY_MANAGEMENT, 2),
    _rule(r" suspended$", ENTITY_MANAGEMENT, 12),
    _rule(r" reinstated$", ENTITY_MANAGEMENT, 13),
    _rule(r" expired$", ENTITY_MANAGEMENT, 11),
    _rule(r"name updated", ENTITY_MANAGEMENT, 5),  # OCSF's Move: "move or rename"
    _rule(r"deauthorized", ENTITY_MANAGEMENT, 9),
    _rule(r"authorized", ENTITY_MANAGEMENT, 8),
    _rule(r"lock|unassigned|unlinked|detached", ENTITY_MANAGEMENT, 3),
    _rule(r"\b(disabled|deactivated|disallowed)\b|^deactivate ", ENTITY_MANAGEMENT, 9),
    _rule(r"\b(enabled|activated|allowed)\b|^activate |^enabled ", ENTITY_MANAGEMENT, 8),
    _rule(r"\b(deleted|removed|uninstalled)\b|^remove ", ENTITY_MANAGEMENT, 4),
    _rule(r"\b(added|created|cloned|installed)\b|^add ", ENTITY_MANAGEMENT, 1),
    _rule(
        r"\b(updated|changed|set|overriden|rotated|upserted|rekeyed|allocated|completed|assigned|"
        r"linked|attached|toggled|extended|required)\b",
        ENTITY_MANAGEMENT,
        3,
    ),
)
FALLBACK = Decision(ENTITY_MANAGEMENT, OTHER)
# Verbs of the SDK that land on an "Other" activity on purpose (docs/formats.md says why).
OTHER_VERBS = frozenset({"user clicked on their invitation"})

_decisions: dict[str, Decision] = {}


def decide(verb: str) -> Decision:
    """The class and activity of an activity verb (remembered: verbs repeat)."""
    known = _decisions.get(verb)
    if known is None:
        known = remember(_decisions, verb, _decide(verb))
    return known


def _decide(verb: str) -> Decision:
    lowered = verb.lower()
    for pattern, decision in VERB_RULES:
        if pattern.search(lowered):
            return decision
    return FALLBACK


# -- queries and replays: the class follows the query category --------------------------

QUERY_CLASSES = {
    "queries": DATASTORE_ACTIVITY,
    "ssh": SSH_ACTIVITY,
    "rdp": RDP_ACTIVITY,
    "k8s": API_ACTIVITY,
    "cloud": API_ACTIVITY,
    "web": HTTP_ACTIVITY,
}
# HTTP methods as OCSF activities: HTTP Activity has one per method, API Activity CRUD.
HTTP_ACTIVITY_IDS = {
    "CONNECT": 1,
    "DELETE": 2,
    "GET": 3,
    "HEAD": 4,
    "OPTIONS": 5,
    "POST": 6,
    "PUT": 7,
    "TRACE": 8,
    "PATCH": 9,
}
API_ACTIVITY_IDS = {"POST": 1, "GET": 2, "HEAD": 2, "PUT": 3, "PATCH": 3, "DELETE": 4}


class QueryKind(NamedTuple):
    """What a query or replay chunk is: its class and activity, and the HTTP method and
    URI when the record has them (web request lines, Kubernetes captures)."""

    cls: OcsfClass
    activity_id: int
    method: str | None
    uri: str | None


def classify_query(
    category: str, body: str, capture: dict[str, Any], *, completed: bool, replay: bool
) -> QueryKind:
    """Datastore Query for SQL and NoSQL; SSH Open/Close and RDP Connect Request/Disconnect by
    whether the record is the session's start or completion (Traffic for a replay chunk);
    HTTP Activity by the request line's method; API Activity (Kubernetes, cloud) by the
    captured method (Other when there is none)."""
    cls = QUERY_CLASSES.get(category, API_ACTIVITY)
    if cls is API_ACTIVITY:
        method, uri = _text(capture.get("requestMethod")), _text(capture.get("requestUri"))
        method = method.upper() if method is not None else None
        return QueryKind(cls, API_ACTIVITY_IDS.get(method or "", OTHER), method, uri)
    if cls is HTTP_ACTIVITY:
        method, uri = web_request(body)
        return QueryKind(cls, HTTP_ACTIVITY_IDS.get(method or "", OTHER), method, uri)
    if cls is DATASTORE_ACTIVITY:
        return QueryKind(cls, 4, None, None)
    if replay:
        return QueryKind(cls, 6, None, None)
    if cls is SSH_ACTIVITY:
        return QueryKind(cls, 2 if completed else 1, None, None)
    return QueryKind(cls, 7 if completed else 3, None, None)


def _text(value: Any) -> str | None:
    return value if type(value) is str and value else None


_web: dict[str, tuple[str | None, str | None]] = {}
_NO_REQUEST: tuple[str | None, str | None] = (None, None)


def web_request(body: str) -> tuple[str | None, str | None]:
    """(method, path) of a web query, whose body is the request line (``GET /path``)."""
    known = _web.get(body)
    if known is None:
        method, _, rest = body.partition(" ")
        path = rest.split(" ", 1)[0] if rest else ""
        method = method.upper()
        known = (method, path or None) if method in HTTP_ACTIVITY_IDS else _NO_REQUEST
        remember(_web, body, known)
    return known


# Managed-secret log actions as Entity Management activities (a secret is a managed entity,
# and the log records what was done to it, not an API call's shape).
SECRET_ACTIONS = {"retrieve": 2, "read": 2, "create": 1, "update": 3, "rotate": 3, "delete": 4}

# Database kinds by resource type (database.type_id): 1 Relational, 6 NoSQL, 99 Other.
_NOSQL = re.compile(
    r"mongo|document_?db|dynamo|cassandra|redis|couchbase|memcached|neptune|aerospike|elastic|amazon_es"
)
_RELATIONAL = re.compile(
    r"postgres|mysql|maria|aurora|sql_?server|oracle|redshift|snowflake|db_?2|sybase|teradata|greenplum|"
    r"citus|cockroach|memsql|single_?store|clustrix|vertica|presto|trino|athena|big_?query|spanner|"
    r"click_?house|databricks|druid"
)
_database_kinds: dict[str, int] = {}


def database_type_id(resource_type: str) -> int:
    known = _database_kinds.get(resource_type)
    if known is None:
        lowered = resource_type.lower()
        kind = 6 if _NOSQL.search(lowered) else 1 if _RELATIONAL.search(lowered) else OTHER
        known = remember(_database_kinds, resource_type, kind)
    return known


DATABASE_TYPES = {1: "Relational", 6: "NoSQL"}

# managed_entity.type_id for the StrongDM entity types OCSF names (else Other, with the
# StrongDM type as ``type``).
ENTITY_TYPE_IDS = {"user": (2, "User"), "organization": (4, "Organization"), "policy": (5, "Policy")}


# -- ECS: event.category and event.type of each (class, activity) ------------------------

EcsKind = tuple[tuple[str, ...], tuple[str, ...]]


def ecs_kind(cls: OcsfClass, activity_id: int) -> EcsKind:
    """(``event.category``, ``event.type``): only types ECS expects for the category."""
    if cls is AUTHENTICATION:
        return ("authentication",), ("start",) if activity_id == 1 else ("end",) if activity_id == 2 else (
            "info",
        )
    if cls is ACCOUNT_CHANGE:
        change = {1: "creation", 6: "deletion"}.get(activity_id, "change")
        return ("iam",), ("user", change) if activity_id != OTHER else ("user", "info")
    if cls is GROUP_MANAGEMENT:
        return ("iam",), ("group", "change")
    if cls is USER_ACCESS:
        return ("iam",), ("user", "change")
    if cls is ENTITY_MANAGEMENT:
        kind = {1: "creation", 2: "access", 4: "deletion", OTHER: "info"}.get(activity_id, "change")
        return ("configuration",), (kind,)
    if cls is DATASTORE_ACTIVITY:
        return ("database",), ("access",)
    if cls is SSH_ACTIVITY or cls is RDP_ACTIVITY:
        start = activity_id in (1, 3)
        return ("session",), ("start",) if start else ("end",) if activity_id in (2, 7) else ("info",)
    if cls is HTTP_ACTIVITY:
        return ("web",), ("access",)
    return ("api",), ({1: "creation", 2: "access", 3: "change", 4: "deletion"}.get(activity_id, "info"),)
