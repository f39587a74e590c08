"""What each sink kind sends, the sinks file's validation, backoff and the breaker."""

from __future__ import annotations

from dataclasses import replace

import json

import pytest

from poet_grpc.core.models import EventRecord
from poet_grpc.integrations import SinkConfig, SinksFileError, load_sinks
from poet_grpc.integrations import formatters
from poet_grpc.integrations.delivery import CircuitBreaker, backoff, retry_after

ALERT = EventRecord(
    id="e-1",
    type="alert.create_external",
    source="poet.learning_engine",
    timestamp=1_700_000_000.5,
    payload={"alert_type": "model_drift", "severity": "high", "model_name": "churn", "drift_score": 0.6,
             "execution_id": "exec-1", "feedback_url": "/poet/feedback/d-1", "function_name": "detect"},
    correlation_id="drift-churn-1",
    causation_id="d-1",
    metadata={"version": "1.0", "service": "poet", "environment": "dev"},
    function_name="detect",
    position=7,
)


def sink(kind: str, **extra) -> SinkConfig:
    return SinkConfig(name="s", kind=kind, url="http://r.test/hook", event_types=("*",), **extra)


def test_webhook_sends_the_event_as_the_rest_api_shows_it():
    [request] = formatters.webhook(sink("webhook"), ALERT)
    assert request.url == "http://r.test/hook"
    assert request.body == {
        "id": "e-1", "type": "alert.create_external", "source": "poet.learning_engine",
        "timestamp": "2023-11-14T22:13:20.500000Z", "correlation_id": "drift-churn-1", "causation_id": "d-1",
        "metadata": {"version": "1.0", "service": "poet", "environment": "dev"}, "payload": ALERT.payload,
        "position": "7", "function_name": "detect",
    }


@pytest.mark.parametrize("severity, expected", [("critical", "critical"), ("high", "error"), ("medium", "warning"), ("low", "info")])
def test_pagerduty_sends_an_events_v2_trigger(severity, expected):
    event = replace(ALERT, payload={**ALERT.payload, "severity": severity})
    [request] = formatters.pagerduty(sink("pagerduty", routing_key="rk"), event)
    body = request.body
    assert body["routing_key"] == "rk" and body["event_action"] == "trigger"
    assert body["dedup_key"] == "drift-churn-1"
    assert body["payload"]["summary"] == "Model Drift Detected: churn"
    assert body["payload"]["source"] == "churn"
    assert body["payload"]["severity"] == expected
    details = body["payload"]["custom_details"]
    assert details["poet_execution_id"] == "exec-1" and details["drift_score"] == 0.6
    assert details["feedback_url"] == "/poet/feedback/d-1"


def test_pagerduty_dedup_key_falls_back_to_the_event_id():
    event = replace(ALERT, correlation_id="")
    assert formatters.pagerduty(sink("pagerduty", routing_key="rk"), event)[0].body["dedup_key"] == "e-1"


def test_slack_sends_text_and_blocks():
    [request] = formatters.slack(sink("slack"), ALERT)
    assert request.body["text"].startswith("POET alert.create_external — detect")
    assert "severity: high" in request.body["text"]
    kinds = [b["type"] for b in request.body["blocks"]]
    assert kinds == ["section", "section", "context"]
    assert "/poet/feedback/d-1" in json.dumps(request.body["blocks"])


def test_mlflow_sets_poet_tags_on_the_run():
    event = replace(ALERT, payload={**ALERT.payload, "mlflow_run_id": "run-9"})
    requests = formatters.mlflow(SinkConfig(name="m", kind="mlflow", url="http://mlflow.test", event_types=("*",)), event)
    assert {r.url for r in requests} == {"http://mlflow.test/api/2.0/mlflow/runs/set-tag"}
    tags = {r.body["key"]: r.body["value"] for r in requests}
    assert all(r.body["run_id"] == "run-9" for r in requests)
    assert tags["poet.execution_id"] == "exec-1" and tags["poet.drift_score"] == "0.6"
    assert tags["poet.event_type"] == "alert.create_external"


def test_mlflow_without_a_run_is_permanent():
    with pytest.raises(formatters.PermanentError):
        formatters.mlflow(sink("mlflow"), ALERT)
    assert formatters.mlflow(sink("mlflow", run_id="r0"), ALERT)[0].body["run_id"] == "r0"


def write(tmp_path, data) -> str:
    path = tmp_path / "sinks.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def test_sinks_file_is_loaded_with_env_secrets(tmp_path):
    path = write(tmp_path, [
        {"name": "oncall", "kind": "pagerduty", "url": "https://events.pagerduty.com/v2/enqueue", "routing_key": "env:PD_KEY"},
        {"name": "chat", "kind": "slack", "url": "env:SLACK_URL", "event_types": ["function.update", "alert.*"], "max_attempts": 2},
        {"name": "off", "kind": "webhook", "url": "http://x", "event_types": ["*"], "enabled": False},
    ])
    oncall, chat = load_sinks(path, env={"PD_KEY": "secret", "SLACK_URL": "https://hooks.slack.test/T/B"})
    assert oncall.routing_key == "secret" and oncall.event_types == ("alert.create_external",)
    assert chat.url == "https://hooks.slack.test/T/B" and chat.max_attempts == 2
    assert chat.wants("alert.create_external") and chat.wants("function.update") and not chat.wants("drift.detected")
    assert load_sinks("") == []


@pytest.mark.parametrize("content, message", [
    ("[{", "not valid JSON"),
    ({"name": "x"}, "must be a JSON list"),
    ([{"name": "x", "kind": "email", "url": "http://x", "event_types": ["*"]}], "kind: must be one of"),
    ([{"name": "x", "kind": "webhook", "url": "ftp://x", "event_types": ["*"]}], "url: must be an http(s) URL"),
    ([{"name": "x", "kind": "webhook", "url": "http://x"}], "event_types: must be a non-empty list"),
    ([{"name": "x", "kind": "pagerduty", "url": "http://x"}], "routing_key: is required"),
    ([{"name": "x", "kind": "pagerduty", "url": "http://x", "routing_key": "env:NOPE_UNSET"}], "NOPE_UNSET is not set"),
    ([{"name": "x", "kind": "webhook", "url": "http://x", "event_types": ["*"], "max_attempts": 0}], "max_attempts: must be at least 1"),
    ([{"name": "x", "kind": "webhook", "url": "http://x", "event_types": ["*"], "retries": 3}], "unknown field(s) retries"),
    ([{"name": "x", "kind": "webhook", "url": "http://x", "event_types": ["*"]}] * 2, "used twice"),
])
def test_bad_sinks_files_are_refused_with_the_problem_named(tmp_path, content, message):
    path = write(tmp_path, content)
    with pytest.raises(SinksFileError) as caught:
        load_sinks(path, env={})
    assert message in str(caught.value) and path in str(caught.value)


def test_missing_sinks_file(tmp_path):
    with pytest.raises(SinksFileError, match="cannot read it"):
        load_sinks(tmp_path / "nope.json")


def test_backoff_grows_with_jitter_and_honours_retry_after_within_bounds():
    cfg = SinkConfig(name="s", kind="webhook", url="http://x", event_types=("*",), backoff_initial_seconds=1, backoff_max_seconds=5)
    assert 0.5 <= backoff(cfg, 1) <= 1 and 2 <= backoff(cfg, 3) <= 4 and 2.5 <= backoff(cfg, 10) <= 5
    assert backoff(cfg, 1, retry_after_seconds=3) == 3 and backoff(cfg, 1, retry_after_seconds=60) == 5
    assert retry_after("7") == 7 and retry_after(None) is None and retry_after("soon") is None


def test_circuit_breaker_opens_after_consecutive_failures_and_half_opens():
    now = [0.0]
    breaker = CircuitBreaker(threshold=3, reset_seconds=10, clock=lambda: now[0])
    breaker.failure(); breaker.failure()
    assert breaker.state == "closed"
    breaker.failure()
    assert breaker.state == "open" and breaker.wait_seconds() == 10
    now[0] = 10
    assert breaker.state == "half_open" and breaker.wait_seconds() == 0
    breaker.failure()  # the trial failed: open again
    assert breaker.state == "open"
    now[0] = 20
    breaker.success()
    assert breaker.state == "closed"
