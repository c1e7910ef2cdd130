"""Masking secrets in session content: secrets go, skeletons and benign text stay byte for byte."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from auditstream.formats import to_event
from auditstream.formats.masking import (
    ENV_SECRET_RULE,
    MASK,
    MASKED_FIELD,
    Masker,
    MaskRule,
    builtin_rule_names,
    secret_env_name,
)
from auditstream.sdm.registry import STREAMS
from tests.formats.masking_corpus import BENIGN, SECRETS, Secret

MASKER = Masker()


# ---- the corpus -----------------------------------------------------------------------------


def test_the_corpus_covers_every_rule_and_family() -> None:
    assert len(SECRETS) >= 150 and len(BENIGN) >= 80
    fired = {rule for entry in SECRETS for rule in entry.rules}
    assert fired == set(builtin_rule_names()), "every built-in rule has a corpus case, and no other"
    families = {entry.family for entry in SECRETS}
    assert {
        "mysql",
        "postgres",
        "mssql",
        "oracle",
        "redis",
        "mongo",
        "url",
        "cli",
        "aws",
        "token",
        "key",
    } <= families
    assert len({entry.text for entry in SECRETS}) == len(SECRETS)
    assert len(set(BENIGN)) == len(BENIGN)


@pytest.mark.parametrize("entry", SECRETS, ids=lambda e: e.id)
def test_secret_is_masked_and_skeleton_kept(entry: Secret) -> None:
    masked, fired = MASKER.mask(entry.text)
    for secret in entry.secrets:
        assert secret not in masked, f"{secret!r} survived in {masked!r}"
    for part in entry.skeleton:
        assert part in masked, f"skeleton {part!r} lost in {masked!r}"
    assert MASK in masked
    assert set(entry.rules) <= fired, f"expected {entry.rules}, fired {sorted(fired)}"


@pytest.mark.parametrize("entry", SECRETS, ids=lambda e: e.id)
def test_masking_a_masked_text_changes_nothing(entry: Secret) -> None:
    masked, _ = MASKER.mask(entry.text)
    again, fired = MASKER.mask(masked)
    assert again is masked and fired == frozenset()


@pytest.mark.parametrize("text", BENIGN)
def test_benign_text_comes_through_unchanged_as_the_same_object(text: str) -> None:
    masked, fired = MASKER.mask(text)
    assert masked is text and fired == frozenset()


def test_several_secrets_of_different_rules_in_one_text() -> None:
    text = (
        "ALTER USER app IDENTIFIED BY 'Alpha#1';\n"
        "-- then\n"
        "mysql -uroot -pBravo#2 -h db; curl https://u:Charlie#3@h/x -H 'Authorization: Bearer Delta#4'"
    )
    masked, fired = MASKER.mask(text)
    assert not any(s in masked for s in ("Alpha#1", "Bravo#2", "Charlie#3", "Delta#4"))
    assert masked.count(MASK) == 4
    assert fired == {"sql_identified_by", "cli_password", "url_password", "http_authorization"}


def test_without_builtin_rules_nothing_is_masked() -> None:
    text = SECRETS[0].text
    masked, fired = Masker(builtin=False).mask(text)
    assert masked is text and not fired
    assert not Masker(builtin=False).active and Masker().active


# ---- properties -----------------------------------------------------------------------------

# Words without any trigger of the pre-filter (no "pass", "auth", "token", "-p", "://"...):
# random statements built from them are never candidates, so must come back unchanged.
SAFE_WORDS = [
    "SELECT", "id", "email", "FROM", "users", "WHERE", "AND", "OR", "=", "<", "42", "'bob'", "\"x\"",
    "JOIN", "orders", "ON", "o.user_id", "u.id", "GROUP", "BY", "LIMIT", "10", ";", "\n", "(", ")",
    "count(*)", "now()", "interval", "'1 day'", "$1", "?", "ssh", "ls", "-la", "/var/log", "|", "grep",
    "ERROR", "kubectl", "get", "pods", "-n", "prod", "docker", "ps", "Ünïcødé", "数据", "tail", "-f",
]  # fmt: skip


@given(st.lists(st.sampled_from(SAFE_WORDS), max_size=40), st.sampled_from([" ", "", "\t", "\n"]))
def test_random_benign_statement_is_unchanged(words: list[str], sep: str) -> None:
    text = sep.join(words)
    masked, fired = MASKER.mask(text)
    assert masked is text and not fired


@given(st.text(max_size=200))
@settings(max_examples=300)
def test_masking_is_idempotent_on_any_text(text: str) -> None:
    masked, _ = MASKER.mask(text)
    again, fired = MASKER.mask(masked)
    assert again == masked and not fired


@given(
    st.sampled_from(SECRETS),
    st.sampled_from(BENIGN),
    st.sampled_from(BENIGN),
    st.sampled_from(["\n", ";\n", "\n\n"]),
)
def test_a_secret_between_benign_statements_is_still_masked(
    entry: Secret, before: str, after: str, sep: str
) -> None:
    text = before + sep + entry.text + sep + after
    masked, fired = MASKER.mask(text)
    assert not any(secret in masked for secret in entry.secrets)
    assert masked.startswith(before)
    truncated_key = "PRIVATE KEY-----" in entry.text and "-----END" not in entry.text
    assert masked.endswith(after) is not truncated_key  # a key without its END masks to the end
    assert fired


@given(st.sampled_from(SECRETS))
def test_the_case_of_sql_keywords_does_not_matter(entry: Secret) -> None:
    if entry.family not in ("mysql", "postgres", "mssql"):
        return
    for variant in (entry.text.upper(), entry.text.lower(), entry.text.swapcase()):
        masked, fired = MASKER.mask(variant)
        # The secret's letters changed case with the rest: compare case-insensitively.
        assert not any(s.casefold() in masked.casefold() for s in entry.secrets), (variant, masked)
        assert fired


# ---- mask_event -----------------------------------------------------------------------------


def _session_event(**capture: Any) -> dict[str, Any]:
    """A queries event as the normalizer makes it, for an SSH session with this capture."""
    record = {
        "id": "s1Uj1aKxKI4pbWQSNnqSwakP96k",
        "queryCategory": "ssh",
        "resourceType": "ssh",
        "queryBody": '{"command":"mysql -uroot -pBodyPw#1 app"}',
        "timestamp": "2024-05-01T12:34:56.123456789Z",
        "capture": capture,
    }
    message = json_format.ParseDict(record, STREAMS["queries"].record_class())
    return to_event(STREAMS["queries"], message)


def test_mask_event_masks_every_listed_field_and_never_mutates_its_input() -> None:
    body = b"POST /login HTTP/1.1\r\nAuthorization: Basic dXNlcjpSZXFQdyMy\r\n\r\n"
    event = _session_event(
        command="PGPASSWORD=CmdPw#3 psql -h db",
        clientCommand="sshpass -p ClientPw#4 ssh host",
        requestUri="/api/v1/namespaces/x/pods?access_token=UriTok-5&watch=1",
        requestBody=base64.b64encode(body).decode(),
        env={
            "TERM": "xterm",
            "PGPASSWORD": "EnvNamed#6",
            "GITHUB_TOKEN": "ghp_EnvNamed7",
            "DATABASE_URL": "postgres://app:EnvUrl#8@db/app",
            "PWD": "/home/alice",
        },
    )
    event["description"] = "ran CREATE ROLE x PASSWORD 'Desc#9'"
    event["text"] = "$ mysql -uroot -pText#10\r\n"
    event["width"] = 80  # not a str field the masker knows: left alone
    before = copy.deepcopy(event)

    out = MASKER.mask_event(event)

    assert event == before, "the input event is unchanged"
    assert out is not event and out["capture"] is not event["capture"]
    flat = repr(out) + base64.b64decode(out["capture"]["requestBody"]).decode()
    for secret in ("BodyPw#1", "ReqPw#2", "dXNlcjpSZXFQdyMy", "CmdPw#3", "ClientPw#4", "UriTok-5",
                   "EnvNamed#6", "ghp_EnvNamed7", "EnvUrl#8", "Desc#9", "Text#10"):  # fmt: skip
        assert secret not in flat, secret
    capture = out["capture"]
    assert capture["command"] == "PGPASSWORD=[masked] psql -h db"
    assert capture["clientCommand"] == "sshpass -p [masked] ssh host"
    assert capture["requestUri"] == "/api/v1/namespaces/x/pods?access_token=[masked]&watch=1"
    assert base64.b64decode(capture["requestBody"]) == (
        b"POST /login HTTP/1.1\r\nAuthorization: Basic [masked]\r\n\r\n"
    )
    assert capture["env"] == {
        "TERM": "xterm",
        "PGPASSWORD": MASK,
        "GITHUB_TOKEN": MASK,
        "DATABASE_URL": "postgres://app:[masked]@db/app",
        "PWD": "/home/alice",
    }
    assert out["queryBody"] == '{"command":"mysql -uroot -p[masked] app"}'
    assert out["description"] == "ran CREATE ROLE x PASSWORD '[masked]'"
    assert out["text"] == "$ mysql -uroot -p[masked]\r\n"
    assert out[MASKED_FIELD] == sorted(
        {
            "cli_password",
            "env_password",
            "url_query_secret",
            "http_authorization",
            ENV_SECRET_RULE,
            "url_password",
            "pg_role_password",
        }
    )
    # Everything else is the input's own objects (copied only where something changed).
    assert out["initiator"] is event["initiator"] and out["accountTags"] is event["accountTags"]


def test_mask_event_returns_the_same_object_when_nothing_is_secret() -> None:
    event = _session_event(command="ls -la /var/log", env={"TERM": "xterm", "PWD": "/home/bob"})
    event["queryBody"] = "SELECT password_reset_at FROM users"
    snapshot = copy.deepcopy(event)
    assert MASKER.mask_event(event) is event
    assert event == snapshot and MASKED_FIELD not in event


def test_only_the_changed_containers_are_copied() -> None:
    event = _session_event(command="mysql -uroot -pOnly#1", env={"TERM": "xterm"})
    out = MASKER.mask_event(event)
    assert out["capture"] is not event["capture"]
    assert out["capture"]["env"] is event["capture"]["env"], "env had nothing to mask"
    event2 = _session_event(command="ls", env={"API_TOKEN": "t0k3n"})
    out2 = MASKER.mask_event(event2)
    assert out2["capture"]["env"] is not event2["capture"]["env"]
    assert out2["capture"]["env"] == {"API_TOKEN": MASK}


def test_masked_secrets_merges_names_already_there() -> None:
    event = {"queryBody": "AUTH Merge#1", MASKED_FIELD: ["custom_0", "redis_auth"]}
    out = MASKER.mask_event(event)
    assert out[MASKED_FIELD] == ["custom_0", "redis_auth"]
    assert event[MASKED_FIELD] == ["custom_0", "redis_auth"]


def test_values_that_are_not_strings_are_left_alone() -> None:
    event: dict[str, Any] = {
        "queryBody": None,
        "description": 42,
        "text": ["AUTH NotAString#1"],
        "capture": {"command": None, "env": {"PGPASSWORD": None, "X": 5}, "requestBody": b"raw"},
    }
    assert MASKER.mask_event(event) is event


def test_a_request_body_in_clear_text_is_masked_as_it_is() -> None:
    event = {"capture": {"requestBody": '{"password": "Clear#1"}'}}
    out = MASKER.mask_event(event)
    assert out["capture"]["requestBody"] == '{"password": "[masked]"}'
    assert out[MASKED_FIELD] == ["secret_assignment"]


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("PGPASSWORD", True),
        ("MYSQL_PWD", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("GITHUB_TOKEN", True),
        ("DB_PASSWORD", True),
        ("CLIENT_SECRET", True),
        ("STRIPE_API_KEY", True),
        ("SSHPASS", True),
        ("vault_token", True),
        ("PWD", False),
        ("OLDPWD", False),
        ("TERM", False),
        ("PATH", False),
        ("SSH_AUTH_SOCK", False),
        ("GPG_KEY", False),
        ("TOKENIZERS_PARALLELISM", False),
    ],
)
def test_secret_env_names(name: str, secret: bool) -> None:
    assert secret_env_name(name) is secret


def test_an_env_variable_named_like_a_secret_but_holding_a_variable_reference_is_kept() -> None:
    event = {"capture": {"env": {"PGPASSWORD": "${DB_PASS}", "TOKEN": ""}}}
    assert MASKER.mask_event(event) is event


# ---- custom rules ---------------------------------------------------------------------------


def test_custom_rule_by_group_index_name_and_whole_match() -> None:
    masker = Masker(
        [
            MaskRule(pattern=r"ticket=(\d+)", group=1),
            MaskRule(name="employee_id", pattern=r"emp-(?P<num>\d{6})", group="num"),
            MaskRule(name="internal_host", pattern=r"\b[a-z0-9]+\.corp\.internal\b"),
        ],
        builtin=False,
    )
    masked, fired = masker.mask("ticket=123 by emp-004211 on db7.corp.internal")
    assert masked == "ticket=[masked] by emp-[masked] on [masked]"
    assert fired == {"custom_0", "employee_id", "internal_host"}


def test_custom_rules_run_after_builtin_ones_and_are_named_in_the_event() -> None:
    masker = Masker([MaskRule(name="acme_key", pattern=r"acme_[A-Za-z0-9]{8}")])
    out = masker.mask_event({"queryBody": "SELECT 'acme_Ab12Cd34';\nAUTH Both#1"})
    assert out["queryBody"] == "SELECT '[masked]';\nAUTH [masked]"
    assert out[MASKED_FIELD] == ["acme_key", "redis_auth"]


def test_a_custom_rule_that_matches_nothing_returns_the_text_itself() -> None:
    masker = Masker([MaskRule(pattern=r"never(\d)", group=1)], builtin=False)
    text = "nothing to see"
    assert masker.mask(text) == (text, frozenset()) and masker.mask(text)[0] is text


def test_a_bad_pattern_is_rejected_naming_the_problem() -> None:
    with pytest.raises(ValidationError, match=r"mask pattern '\(unclosed' is not a valid regex: missing \)"):
        MaskRule(pattern="(unclosed")


def test_a_missing_group_number_is_rejected() -> None:
    with pytest.raises(ValidationError, match=r"mask pattern 'a\(b\)' has no group 2 \(it has 1 group\)"):
        MaskRule(pattern="a(b)", group=2)


def test_a_missing_group_name_is_rejected() -> None:
    with pytest.raises(ValidationError, match=r"has no group named 'pw' \(named groups: user\)"):
        MaskRule(pattern="(?P<user>\\w+):(\\w+)", group="pw")


def test_mask_rule_forbids_unknown_fields_and_is_frozen() -> None:
    with pytest.raises(ValidationError, match="extra"):
        MaskRule.model_validate({"pattern": "x", "replace": "y"})
    rule = MaskRule(pattern="x")
    with pytest.raises(ValidationError):
        rule.pattern = "y"  # type: ignore[misc]
