"""deploy/grafana, deploy/prometheus and docs/operations.md cannot drift from the metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from auditstream.ops.metrics import catalogue

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "auditstream.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
OPERATIONS = ROOT / "docs" / "operations.md"
METRIC_NAME = re.compile(r"\bauditstream_[a-z0-9_]*[a-z0-9]")
# Standard series the rules may use besides ours: the process collector's, and Prometheus' own.
STANDARD = {"process_start_time_seconds", "up"}

SAMPLES = {sample for info in catalogue() for sample in info.samples}
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not found on PATH; install the Debian package 'prometheus' (make apt-deps does)",
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, cwd=ALERTS.parent)


@needs_promtool
def test_alert_rules_are_valid():
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 10 rules found" in result.stdout


@needs_promtool
def test_alert_rules_fire_on_synthetic_series():
    result = promtool("test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def test_alerts_cover_the_issue_and_use_only_exported_metrics():
    rules = {rule["alert"]: rule for rule in alert_rules()}
    wanted = {
        "AuditstreamLagHigh": "auditstream_checkpoint_lag_seconds",
        "AuditstreamSinkFailing": "auditstream_sink_state",
        "AuditstreamAuthFailing": "auditstream_api_credentials_rejected",
        "AuditstreamNoRecords": "auditstream_last_delivery_timestamp_seconds",
    }
    for alert, metric in wanted.items():
        assert metric in rules[alert]["expr"], alert
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        unknown = set(METRIC_NAME.findall(rule["expr"])) - SAMPLES
        assert not unknown, f"{name} uses metrics auditstream does not export: {unknown}"
        others = set(re.findall(r"\b([a-z_]+_seconds|up)\b(?=[{\s)])", rule["expr"])) - SAMPLES - STANDARD
        assert not others, f"{name} uses {others}"


def dashboard_exprs(dashboard: dict) -> list[str]:
    exprs = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            exprs.append(target["expr"])
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            exprs.append(variable["query"]["query"])
    return exprs


def test_dashboard_is_importable_grafana_json():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "auditstream" and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "job", "instance", "stream", "sink"} <= variables
    for panel in dashboard["panels"]:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
            assert "$__rate_interval" in target["expr"] or not re.search(
                r"\b(rate|increase)\(", target["expr"]
            )


def test_dashboard_uses_only_exported_metrics_and_shows_what_the_issue_asks():
    exprs = dashboard_exprs(json.loads(DASHBOARD.read_text()))
    used = {name for expr in exprs for name in METRIC_NAME.findall(expr)}
    assert used - SAMPLES == set(), "the dashboard queries metrics auditstream does not export"
    # Rates, lag, errors and rate limits, per stream and per sink.
    for name in [
        "auditstream_records_fetched_total",
        "auditstream_records_delivered_total",
        "auditstream_records_failed_total",
        "auditstream_checkpoint_lag_seconds",
        "auditstream_api_requests_total",
        "auditstream_rate_limit_waits_total",
        "auditstream_rate_limit_wait_seconds_total",
        "auditstream_rate_limit_remaining",
        "auditstream_sink_batch_duration_seconds_bucket",
        "auditstream_sink_retries_total",
        "auditstream_records_dead_lettered_total",
        "auditstream_queue_depth_batches",
        "auditstream_sink_state",
        "auditstream_ready",
    ]:
        assert name in used, name
    assert any("by (stream)" in e for e in exprs) and any("by (sink)" in e for e in exprs)


def test_operations_doc_describes_every_metric_and_no_other():
    text = OPERATIONS.read_text()
    for info in catalogue():
        shown = info.samples[0] if info.type in {"counter", "info"} else info.name
        assert f"`{shown}`" in text, f"docs/operations.md does not document {shown}"
        for label in info.labels:
            assert f"`{label}`" in text, label
    mentioned = set(METRIC_NAME.findall(text))
    families = {info.name for info in catalogue()}
    assert mentioned - SAMPLES - families == set()
    for rule in alert_rules():
        assert rule["alert"] in text, rule["alert"]
