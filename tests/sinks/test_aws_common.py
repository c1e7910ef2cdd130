"""What both AWS sinks share: how botocore's failures are classified, and how a request sent
as several calls settles when some of them fail."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from botocore import exceptions as bx
from pydantic import TypeAdapter

from auditstream.sinks.aws import AwsRequestError, classify
from auditstream.sinks.base import SinkFatalError
from auditstream.sinks.cloudwatch_logs import CloudWatchLogsSinkSettings
from auditstream.sinks.registry import SinkSettings
from auditstream.sinks.retry import TransientError
from auditstream.sinks.s3 import S3SinkSettings


def client_error(code: str, status: int, message: str = "", operation: str = "PutObject") -> bx.ClientError:
    response = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return bx.ClientError(response, operation)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "kind", "text"),
    [
        (client_error("ThrottlingException", 400, "Rate exceeded", "PutLogEvents"), TransientError, "Rate"),
        (client_error("SlowDown", 503), TransientError, "SlowDown"),
        (client_error("", 502), TransientError, "502"),
        (client_error("RequestTimeout", 400), TransientError, "RequestTimeout"),
        (client_error("ExpiredToken", 400), TransientError, "ExpiredToken"),
        (
            client_error("BadDigest", 400, "The Content-MD5 you specified did not match"),
            TransientError,
            "MD5",
        ),
        (bx.EndpointConnectionError(endpoint_url="https://s3"), TransientError, "EndpointConnectionError"),
        (bx.ReadTimeoutError(endpoint_url="https://s3"), TransientError, "ReadTimeoutError"),
        (
            client_error("AccessDenied", 403, "Access Denied"),
            SinkFatalError,
            "missing permission s3:PutObject",
        ),
        (
            client_error("AccessDeniedException", 400, "not authorized to perform: logs:PutLogEvents on x"),
            SinkFatalError,
            "missing permission logs:PutLogEvents",
        ),
        (client_error("403", 403, "", "HeadBucket"), SinkFatalError, "missing permission s3:ListBucket"),
        (client_error("KMS.DisabledException", 400, "key disabled"), SinkFatalError, "missing permission"),
        (client_error("InvalidAccessKeyId", 403), SinkFatalError, "AWS rejected the credentials"),
        (client_error("UnrecognizedClientException", 400), SinkFatalError, "AWS_PROFILE"),
        (client_error("PermanentRedirect", 301), SinkFatalError, "set region"),
        (bx.NoCredentialsError(), SinkFatalError, "web identity (EKS IRSA)"),
        (bx.NoRegionError(), SinkFatalError, "set region"),
        (client_error("NoSuchBucket", 404), AwsRequestError, "NoSuchBucket"),
        (client_error("InvalidParameterException", 400, "bad", "PutLogEvents"), AwsRequestError, "bad"),
    ],
)
def test_failures_are_classified_once_for_both_sinks(error, kind, text):
    result = classify(error, error.operation_name if hasattr(error, "operation_name") else "PutObject", "x")
    assert type(result) is kind
    assert text in str(result)


def test_a_kms_hint_is_added_when_aws_does_not_name_the_action():
    denied = classify(
        client_error("AccessDenied", 403, "Access Denied"), "PutObject", "s3://b/k", "and kms:X"
    )
    assert str(denied).endswith("missing permission s3:PutObject (and kms:X)")
    named = client_error("AccessDenied", 403, "is not authorized to perform: kms:GenerateDataKey on key")
    assert str(classify(named, "PutObject", "s3://b/k", "and kms:X")).endswith("kms:GenerateDataKey")


def test_the_example_configs_aws_sinks_are_valid_once_uncommented():
    """config/auditstream.example.toml ships them commented out (they need the [aws] extra)."""
    text = (Path(__file__).resolve().parents[2] / "config" / "auditstream.example.toml").read_text()
    start = text.index('# [[sinks]]\n# type = "s3"')
    block = text[start : text.find("\n\n", start)]  # the AWS section ends at a blank line
    document = "\n".join(
        line[2:] for line in block.splitlines() if line.startswith("# ") and line[2:3] != "#"
    )
    sinks = [TypeAdapter(SinkSettings).validate_python(item) for item in tomllib.loads(document)["sinks"]]
    assert [type(s) for s in sinks] == [S3SinkSettings, CloudWatchLogsSinkSettings]
