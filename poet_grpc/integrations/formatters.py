"""What each kind of sink sends for an event: one or more JSON POSTs.

A formatter is a pure function of the sink's configuration and the event.
PermanentError means the event can never be delivered to that sink (it goes
to the dead-letter table without a request).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from poet_grpc.core.models import EventRecord

from ._config import SinkConfig

SEVERITY = {"critical": "critical", "high": "error", "medium": "warning", "low": "info"}
"""POET alert severity -> PagerDuty Events v2 severity."""


class PermanentError(Exception):
    """The event cannot be turned into a request for this sink."""


@dataclass(frozen=True)
class Request:
    url: str
    body: dict[str, Any]


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def event_json(event: EventRecord) -> dict[str, Any]:
    """The event as the REST API shows it: snake_case fields, RFC 3339 timestamp,
    the int64 position as a string (proto3 JSON)."""
    return {
        "id": event.id,
        "type": event.type,
        "source": event.source,
        "timestamp": rfc3339(event.timestamp),
        "correlation_id": event.correlation_id,
        "causation_id": event.causation_id,
        "metadata": dict(event.metadata),
        "payload": event.payload,
        "position": str(event.position),
        "function_name": event.function_name,
    }


def webhook(sink: SinkConfig, event: EventRecord) -> list[Request]:
    return [Request(sink.url, event_json(event))]


def dedup_key(event: EventRecord) -> str:
    return event.correlation_id or event.id


def pagerduty(sink: SinkConfig, event: EventRecord) -> list[Request]:
    """PagerDuty Events API v2 trigger (seed 002 PagerDutyIntegration)."""
    p = event.payload
    subject = p.get("model_name") or event.function_name or "poet"
    if p.get("alert_type") == "model_drift":
        summary = f"Model Drift Detected: {subject}"
    else:
        summary = f"POET {event.type}: {subject}"
    details = {
        "poet_execution_id": p.get("execution_id", ""),
        "drift_score": p.get("drift_score"),
        "feedback_url": p.get("feedback_url", ""),
        "function_name": event.function_name,
        "feature_name": p.get("feature_name", ""),
        "event_id": event.id,
        "event_type": event.type,
    }
    return [
        Request(
            sink.url,
            {
                "routing_key": sink.routing_key,
                "event_action": "trigger",
                "dedup_key": dedup_key(event),
                "payload": {
                    "summary": summary[:1024],
                    "source": str(subject),
                    "severity": SEVERITY.get(str(p.get("severity", "")).lower(), "warning"),
                    "timestamp": rfc3339(event.timestamp),
                    "component": event.function_name or None,
                    "custom_details": {k: v for k, v in details.items() if v not in (None, "")},
                },
            },
        )
    ]


def slack(sink: SinkConfig, event: EventRecord) -> list[Request]:
    """Slack incoming webhook: a one-line text and a few blocks."""
    p = event.payload
    subject = event.function_name or p.get("model_name") or "poet"
    headline = f"POET {event.type} — {subject}"
    facts = [f"*{key}*: {p[key]}" for key in ("severity", "drift_score", "execution_id", "reason", "new_version")
             if p.get(key) not in (None, "")]
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{headline}*"}}]
    if facts:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(facts)}})
    context = f"event {event.id} · {rfc3339(event.timestamp)}"
    if p.get("feedback_url"):
        context += f" · feedback: {p['feedback_url']}"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    return [Request(sink.url, {"text": headline + (": " + "; ".join(f.replace("*", "") for f in facts) if facts else ""),
                               "blocks": blocks})]


def mlflow(sink: SinkConfig, event: EventRecord) -> list[Request]:
    """MLflow REST runs/set-tag, one request per poet.* tag."""
    p = event.payload
    run_id = str(p.get("mlflow_run_id") or sink.run_id)
    if not run_id:
        raise PermanentError("no MLflow run: the event has no payload.mlflow_run_id and the sink no run_id")
    tags = {
        "poet.event_type": event.type,
        "poet.event_id": event.id,
        "poet.execution_id": p.get("execution_id"),
        "poet.function_name": event.function_name,
        "poet.drift_score": p.get("drift_score"),
        "poet.severity": p.get("severity"),
        "poet.correlation_id": event.correlation_id,
    }
    url = f"{sink.url}/api/2.0/mlflow/runs/set-tag"
    return [Request(url, {"run_id": run_id, "key": key, "value": str(value)})
            for key, value in tags.items() if value not in (None, "")]


FORMATTERS: dict[str, Callable[[SinkConfig, EventRecord], list[Request]]] = {
    "webhook": webhook,
    "pagerduty": pagerduty,
    "slack": slack,
    "mlflow": mlflow,
}
