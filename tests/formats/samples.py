"""One realistic record per stream (30), built with the SDK's own message classes.

Written in protobuf JSON form and parsed with ``json_format.ParseDict`` (test code only; the
normalizer never uses json_format) so the fixtures read like the API's data: nested entities,
tags, polymorphic oneofs and nanosecond timestamps. ``query_pair`` is a long-running query's
start and completion records.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from auditstream.sdm.registry import STREAMS

ACTOR = {
    "id": "a-0abcdabcdab00001",
    "email": "alice.glick@example.com",
    "firstName": "Alice",
    "lastName": "Glick",
    "activityExternalId": "e-bca5454",
}
TAGS = {"pairs": [{"name": "env", "value": "prod"}, {"name": "team", "value": "data platform"}]}
ACTIVITY_ID = "0CEGCEGCEGCEGCEGCEGCE1234ceg"

_HISTORY_ENTITIES: dict[str, dict[str, Any]] = {
    "access_request_events_history": {
        "id": "are-5f1e2d3c4b5a6978",
        "requestId": "ar-1a2b3c4d5e6f7081",
        "actorId": "a-0abcdabcdab00001",
        "type": "approved",
        "metadata": '{"comment":"ok for the incident"}',
        "time": "2024-05-01T12:34:56.987654321Z",
    },
    "access_requests_history": {
        "id": "ar-1a2b3c4d5e6f7081",
        "resourceId": "rs-0123456789abcdef",
        "reason": "INC-4711: investigate replication lag",
        "workflowId": "aw-0f0e0d0c0b0a0908",
        "accountId": "a-0abcdabcdab00002",
        "startFrom": "2024-05-01T12:00:00Z",
        "validUntil": "2024-05-01T16:00:00.000000001Z",
        "status": "approved",
        "statusAt": "2024-05-01T12:34:56.123456789Z",
        "grantId": "ag-77aa88bb99cc00dd",
        "duration": 240,
        "requestedDuration": "14400s",
        "resultDuration": "14400.000500s",
        "requesterName": "Bob Example",
    },
    "account_attachments_history": {
        "id": "aa-11223344556677aa",
        "accountId": "a-0abcdabcdab00002",
        "roleId": "r-0fedcba987654321",
    },
    "account_grants_history": {
        "id": "ag-77aa88bb99cc00dd",
        "resourceId": "rs-0123456789abcdef",
        "accountId": "a-0abcdabcdab00002",
        "startFrom": "2024-05-01T12:00:00Z",
        "validUntil": "2024-05-01T16:00:00Z",
        "accessRule": '{"tags":{"env":"prod"}}',
        "accessRequestId": "ar-1a2b3c4d5e6f7081",
    },
    "account_resources_history": {
        "accountId": "a-0abcdabcdab00002",
        "resourceId": "rs-0123456789abcdef",
        "grantedAt": "2024-05-01T12:34:56.123456789Z",
        "expiresAt": "2024-05-01T16:34:56.123456789Z",
        "roleId": "r-0fedcba987654321",
        "accountGrantId": "ag-77aa88bb99cc00dd",
        "createdAt": "2024-05-01T12:34:56.000000007Z",
    },
    "accounts_groups_history": {
        "id": "ag-aabbccddeeff0011",
        "accountId": "a-0abcdabcdab00002",
        "groupId": "g-0011223344556677",
    },
    "accounts_history": {
        "user": {
            "id": "a-0abcdabcdab00002",
            "email": "bob@example.com",
            "firstName": "Bob",
            "lastName": "Example",
            "suspended": True,
            "tags": TAGS,
            "permissionLevel": "database-admin",
            "managedBy": "scim",
            "externalId": "okta|00u1abcd",
            "suspendedRO": True,
            "permissionLevelRW": "database-admin",
            "SCIM": "{}",
            "managerId": "a-0abcdabcdab00001",
            "resolvedManagerId": "a-0abcdabcdab00001",
            "createdAt": "2023-01-02T03:04:05.060708090Z",
            "employeeNumber": "E-1001",
        }
    },
    "approval_workflow_approvers_history": {
        "id": "awa-0102030405060708",
        "approvalFlowId": "aw-0f0e0d0c0b0a0908",
        "approvalStepId": "aws-1112131415161718",
        "accountId": "a-0abcdabcdab00001",
        "reference": "manager-of-requester",
    },
    "approval_workflow_steps_history": {
        "id": "aws-1112131415161718",
        "approvalFlowId": "aw-0f0e0d0c0b0a0908",
        "quantifier": "any",
        "skipAfter": "3600s",
        "stepOrder": 1,
    },
    "approval_workflows_history": {
        "id": "aw-0f0e0d0c0b0a0908",
        "name": "prod database break-glass",
        "approvalMode": "manual",
        "description": "two approvers, one of them a manager",
        "approvalWorkflowSteps": [
            {
                "quantifier": "all",
                "skipAfter": "1800.5s",
                "approvers": [{"accountId": "a-0abcdabcdab00001"}, {"roleId": "r-0fedcba987654321"}],
            },
            {"quantifier": "any", "approvers": [{"reference": "manager-of-requester"}]},
        ],
    },
    "groups_history": {
        "id": "g-0011223344556677",
        "name": "dba",
        "description": "Database administrators",
        "source": "scim",
        "tags": TAGS,
    },
    "groups_roles_history": {
        "id": "gr-8899aabbccddeeff",
        "groupId": "g-0011223344556677",
        "roleId": "r-0fedcba987654321",
        "groupName": "dba",
        "roleName": "prod-dba",
    },
    "identity_aliases_history": {
        "id": "i-0a1b2c3d4e5f6071",
        "accountId": "a-0abcdabcdab00002",
        "identitySetId": "is-1234567890abcdef",
        "username": "bob",
    },
    "identity_sets_history": {"id": "is-1234567890abcdef", "name": "default"},
    "nodes_history": {
        "gateway": {
            "id": "n-1234abcd5678ef90",
            "name": "gw-eu-west-1a",
            "state": "live",
            "listenAddress": "gw1.example.com:5000",
            "bindAddress": "0.0.0.0:5000",
            "tags": TAGS,
            "gatewayFilter": "region=eu",
            "device": "ip-10-0-1-10",
            "location": "eu-west-1",
            "version": "45.10.0",
            "uuid": "0b6e2a44-1c5f-4c8e-9a5b-3c2d1e0f9a8b",
            "maintenanceWindows": [{"cronSchedule": "0 3 * * 0", "requireIdleness": True}],
        }
    },
    "organization_history": {
        "name": "Example Corp",
        "createdAt": "2020-01-01T00:00:00Z",
        "updatedAt": "2024-05-01T12:34:56.123456789Z",
        "authProvider": "okta",
        "idleTimeoutEnabled": True,
        "idleTimeout": "3600s",
        "sessionTimeoutEnabled": True,
        "sessionTimeout": "43200s",
        "mfaEnabled": True,
        "mfaProvider": "duo",
        "logRemoteEncoder": "pubkey",
        "logLocalStorage": "syslog",
        "logLocalEncoder": "plaintext",
        "logLocalFormat": "json",
        "logTcpAddress": "siem.example.com:514",
        "scimProvider": "okta",
        "websitesSubdomain": "example",
        "sshCertificateAuthorityPublicKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample",
        "sshCertificateAuthorityUpdatedAt": "2024-04-01T00:00:00.5Z",
        "requireSecretStore": False,
        "sensitiveLabel": "pii",
        "samlMetadataUrl": "https://example.okta.com/app/sso/saml/metadata",
        "kind": "root",
        "id": "o-6dce5b5663c12e6b",
        "loopbackRange": "127.0.0.2/31",
        "deviceTrustEnabled": True,
        "deviceTrustProvider": "crowdstrike",
        "enforceSingleSession": False,
        "discardReplays": False,
        "publicKeyPem": "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAexample\n-----END PUBLIC KEY-----\n",
        "logConfig": {
            "localStorage": "syslog",
            "localEncoder": "plaintext",
            "localFormat": "json",
            "localTcpAddress": "siem.example.com:514",
            "publicKey": "",
            "categories": {
                "entries": [
                    {"name": "ssh", "config": {"remoteEncoder": "strongdm", "remoteDiscardReplays": False}},
                    {"name": "queries", "config": {"remoteEncoder": "pubkey", "remoteDiscardReplays": True}},
                ]
            },
        },
        "peerPoliciesEnabled": True,
    },
    "policies_history": {
        "id": "po-0a0b0c0d0e0f1011",
        "name": "deny-prod-writes",
        "description": "No writes to production outside business hours",
        "policy": 'forbid(principal, action == SQL::Action::"write", resource in Tag::"env=prod");',
    },
    "remote_identities_history": {
        "id": "ri-2233445566778899",
        "accountId": "a-0abcdabcdab00002",
        "remoteIdentityGroupId": "rig-aabbccdd00112233",
        "username": "bob_ro",
    },
    "remote_identity_groups_history": {"id": "rig-aabbccdd00112233", "name": "default"},
    "resources_history": {
        "postgres": {
            "id": "rs-0123456789abcdef",
            "name": "prod-db",
            "healthy": True,
            "tags": TAGS,
            "secretStoreId": "se-1020304050607080",
            "egressFilter": "region=eu",
            "bindInterface": "127.0.0.1",
            "proxyClusterId": "",
            "subdomain": "prod-db",
            "database": "app",
            "hostname": "db.internal.example.com",
            "overrideDatabase": True,
            "password": "",
            "port": 5432,
            "portOverride": 15432,
            "username": "sdm_proxy",
        }
    },
    "role_resources_history": {
        "roleId": "r-0fedcba987654321",
        "resourceId": "rs-0123456789abcdef",
        "grantedAt": "2024-05-01T12:34:56.000001Z",
    },
    "roles_history": {
        "id": "r-0fedcba987654321",
        "name": "prod-dba",
        "tags": TAGS,
        "accessRules": '[{"tags":{"env":"prod"},"type":"postgres"}]',
        "managedBy": "",
        "scope": {"type": "agents", "agents": ["claude-code", "codex"]},
    },
    "secret_stores_history": {
        "vaultToken": {
            "id": "se-1020304050607080",
            "name": "vault-prod",
            "namespace": "admin/prod",
            "serverAddress": "https://vault.example.com:8200",
            "tags": TAGS,
        }
    },
    "workflow_approvers_history": {
        "id": "wa-0011aa22bb33cc44",
        "workflowId": "aw-0f0e0d0c0b0a0908",
        "accountId": "a-0abcdabcdab00001",
    },
    "workflow_roles_history": {
        "id": "wr-5566dd77ee88ff99",
        "workflowId": "aw-0f0e0d0c0b0a0908",
        "roleId": "r-0fedcba987654321",
    },
    "workflows_history": {
        "id": "aw-0f0e0d0c0b0a0908",
        "name": "prod break-glass",
        "description": "Temporary access to production databases",
        "weight": 10,
        "autoGrant": False,
        "enabled": True,
        "requiresReason": True,
        "accessRequestMaxDuration": "28800s",
        "accessRequestFixedDuration": "0.000000001s",
        "accessRules": '[{"tags":{"env":"prod"}}]',
        "approvalFlowId": "aw-0f0e0d0c0b0a0908",
    },
}

# History records that record a deletion (the rest are creations or updates).
DELETED = {
    "roles_history": "2024-05-01T12:34:57.000000001Z",
    "account_attachments_history": "2024-05-01T12:34:57.500000000Z",
}

ACTIVITY: dict[str, Any] = {
    "id": ACTIVITY_ID,
    "verb": "user suspended",
    "description": "Alice Glick (alice.glick@example.com) suspended Bob Example (bob@example.com)",
    "completedAt": "2024-05-01T12:34:56.123456789Z",
    "entities": [
        {
            "id": "a-0abcdabcdab00002",
            "type": "user",
            "name": "Bob Example",
            "email": "bob@example.com",
            "externalId": "okta|00u1abcd",
        },
        {"id": "rs-0123456789abcdef", "type": "datasource", "name": "prod-db"},
    ],
    "ipAddress": "203.0.113.9",
    "actor": ACTOR,
    "userAgent": "strongdm-sdk-python/18.4.0",
}

QUERY: dict[str, Any] = {
    "id": "s1Uj1aKxKI4pbWQSNnqSwakP96k",
    "accountId": "a-0abcdabcdab00001",
    "resourceId": "rs-0123456789abcdef",
    "queryBody": "SELECT id, email\nFROM users\r\nWHERE id = 42 AND note = 'a|b\\c'",
    "duration": "0.012345678s",
    "encrypted": False,
    "queryHash": "5c8a4c0e1f2b3a4d5e6f708192a3b4c5d6e7f809",
    "remoteIdentityUsername": "alice_ro",
    "timestamp": "2024-05-01T12:34:56.123456789Z",
    "egressNodeId": "n-1234abcd5678ef90",
    "replayable": False,
    "recordCount": "1",
    "resourceType": "postgres",
    "queryCategory": "queries",
    "resourceName": "prod-db",
    "resourceTags": TAGS,
    "accountFirstName": "Alice",
    "accountLastName": "Glick",
    "accountEmail": "alice.glick@example.com",
    "accountTags": {"pairs": [{"name": "dept", "value": "sre"}]},
    "completedAt": "2024-05-01T12:34:56.135802467Z",
    "sourceIp": "10.0.1.23",
    "clientIp": "203.0.113.9",
    "authenticationId": "auth-0a1b2c3d",
    "target": "db.internal.example.com:5432",
    "authzJson": '{"policies":["deny-prod-writes"],"decision":"allow"}',
    "identityAliasUsername": "",
    "metadataJson": '{"driver":"postgres","database":"app"}',
    "initiator": {"type": "human", "trusted": True},
}

SSH_START: dict[str, Any] = {
    "id": "s2LongRunningSshSession0001",
    "accountId": "a-0abcdabcdab00002",
    "resourceId": "rs-00000000000055aa",
    "queryBody": '{"command":"bash -l"}',
    "encrypted": False,
    "queryHash": "",
    "timestamp": "2024-05-01T09:00:00.000000001Z",
    "egressNodeId": "n-1234abcd5678ef90",
    "replayable": True,
    "resourceType": "ssh",
    "queryCategory": "ssh",
    "resourceName": "bastion-1",
    "accountEmail": "bob@example.com",
    "accountFirstName": "Bob",
    "accountLastName": "Example",
    "capture": {
        "width": 120,
        "height": 40,
        "command": "bash -l",
        "env": {"TERM": "xterm-256color", "LANG": "en_US.UTF-8"},
        "type": "shell",
        "clientCommand": "ssh bastion-1",
        "requestBody": "aGVsbG8=",
        "impersonationGroups": ["ops"],
    },
    "sourceIp": "10.0.1.24",
    "clientIp": "2001:db8::42",
    "target": "[2001:db8::1]:22",
}


def query_pair() -> tuple[Message, Message]:
    """A long-running SSH session: its start record, then its completion record."""
    spec = STREAMS["queries"]
    start = json_format.ParseDict(SSH_START, spec.record_class())
    done = json_format.ParseDict(
        {**SSH_START, "completedAt": "2024-05-01T13:30:00.5Z", "duration": "16199.499999999s"},
        spec.record_class(),
    )
    return start, done


def history_record(stream: str) -> Message:
    spec = STREAMS[stream]
    entity_json = spec.record_class.DESCRIPTOR.fields_by_name[spec.entity_field].json_name
    record: dict[str, Any] = {
        "activityId": ACTIVITY_ID,
        "timestamp": "2024-05-01T12:34:56.123456789Z",
        entity_json: _HISTORY_ENTITIES[stream],
    }
    if stream in DELETED:
        record["deletedAt"] = DELETED[stream]
    return json_format.ParseDict(record, spec.record_class())


SECRET_LOG: dict[str, Any] = {
    "id": "msl-0a1b2c3d4e5f6071",
    "createdAt": "2024-05-01T12:34:56.123456789Z",
    "secretEngineId": "se-0123456789abcdef",
    "managedSecretId": "ms-fedcba9876543210",
    "accountId": "a-0abcdabcdab00001",
    "action": "retrieve",
    "debug": "",
}


def sample(stream: str) -> Message:
    """The sample record of one stream (``replays`` lists sessions: a completed SSH one)."""
    spec = STREAMS[stream]
    if stream == "activities":
        return json_format.ParseDict(ACTIVITY, spec.record_class())
    if stream == "queries":
        return json_format.ParseDict(QUERY, spec.record_class())
    if stream == "managed_secret_logs":
        return json_format.ParseDict(SECRET_LOG, spec.record_class())
    if stream == "replays":
        return query_pair()[1]
    return history_record(stream)


def all_samples() -> dict[str, Message]:
    return {name: sample(name) for name in STREAMS}


# What the sample SSH session's first replay chunk showed: a coloured prompt, a command typed
# with a correction, its output. The chunk event is what the replays stream ships.
REPLAY_CHUNK_EVENTS: tuple[tuple[bytes, int], ...] = (
    (b"\x1b[01;32mbob@bastion-1\x1b[00m:~$ ", 120),
    (b"ls -lx\x08 \x08a /etc/ssh\r\n", 850),
    (b"total 4\r\n-rw-r--r-- 1 root root 3289 May  1 09:00 sshd_config\r\n", 40),
)


def sample_event(stream: str) -> dict[str, Any]:
    """The event a sink receives for the sample record of ``stream``: ``to_event`` of it,
    except for ``replays``, whose events are the chunks of a session (engine.replays)."""
    from auditstream.engine.replays import RawChunk, chunk_event, session_fields
    from auditstream.formats import to_event
    from auditstream.formats.replaytext import ReplayAssembler
    from auditstream.sdm.registry import NANOS_PER_SECOND

    spec = STREAMS[stream]
    if stream != "replays":
        return to_event(spec, sample(stream))
    session = to_event(spec, query_pair()[1])
    assembler = ReplayAssembler(None)
    texts = assembler.add(0, [data for data, _ in REPLAY_CHUNK_EVENTS]) + assembler.finish()
    start_ns = 1714566896 * NANOS_PER_SECOND + 123456789
    return chunk_event(
        session_fields(session),
        stream,
        session["queryId"],
        texts[0],
        RawChunk(list(REPLAY_CHUNK_EVENTS)),
        start_ns,
    )


def all_sample_events() -> dict[str, dict[str, Any]]:
    return {name: sample_event(name) for name in STREAMS}


def content_safety_events() -> list[dict[str, Any]]:
    """Events with the fields only content safety adds: a masked query that failed to
    decrypt, and a replay chunk whose data was omitted and that could not be decrypted."""
    from auditstream.formats import to_event

    query = to_event(STREAMS["queries"], sample("queries"))
    query.update(
        maskedSecrets=["sql_identified_by"],
        decryption="failed",
        decryptionError="query key does not open with the configured private key (wrong key?)",
    )
    chunk = sample_event("replays")
    chunk.update(
        dataOmitted=True,
        maskedSecrets=["cli_password"],
        sessionMaskedSecrets=["url_password"],
        replayError="encrypted replay not decrypted: no log_private_key_file configured",
        decryption="no_key",
    )
    return [query, chunk]
