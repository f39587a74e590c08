"""The Metrics object alone: its own registry, bounded labels, the state read at scrape time."""

from __future__ import annotations

import ast
from pathlib import Path

import prometheus_client
from prometheus_client.parser import text_string_to_metric_families

import poet_grpc.core.learning as learning
import poet_grpc.generator as generator
from poet_grpc.generator import _llm
from poet_grpc.observability.metrics import GATE_CHECKS, Metrics

GENERATOR_SOURCES = Path(generator.__file__).parent


def samples(metrics: Metrics) -> dict[tuple[str, frozenset], float]:
    body, _ = metrics.exposition()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, frozenset(labels.items())))


def test_each_metrics_has_its_own_registry_and_the_global_one_stays_empty():
    first, second = Metrics(), Metrics()
    first.events_appended.inc(3)
    assert value(first, "poet_event_log_appended_events_total") == 3
    assert value(second, "poet_event_log_appended_events_total") == 0
    global_names = {m.name for m in prometheus_client.REGISTRY.collect()}
    assert not any(name.startswith(("poet_", "grpc_server_")) for name in global_names)


def test_exposition_is_prometheus_text_with_the_process_metrics():
    body, content_type = Metrics().exposition()
    assert content_type == prometheus_client.CONTENT_TYPE_LATEST
    names = {family.name for family in text_string_to_metric_families(body.decode())}
    assert {"process_resident_memory_bytes", "process_cpu_seconds", "process_open_fds", "python_info",
            "poet_active_enhancements", "poet_event_log_events"} <= names


def test_rpc_series_are_those_of_the_method_or_unknown():
    metrics = Metrics()
    metrics.method("unary", "/poet.v1.PoetService/Enhance").handled("OK").inc()
    metrics.method("unknown", None).handled("UNIMPLEMENTED").inc()
    assert value(metrics, "grpc_server_handled_total", grpc_type="unary", grpc_service="poet.v1.PoetService",
                 grpc_method="Enhance", grpc_code="OK") == 1
    assert value(metrics, "grpc_server_handled_total", grpc_type="unknown", grpc_service="unknown",
                 grpc_method="unknown", grpc_code="UNIMPLEMENTED") == 1
    # Resolved once per method: the interceptor does no label lookup per call.
    enhance = "/poet.v1.PoetService/Enhance"
    assert metrics.method("unary", enhance) is metrics.method("unary", enhance)


def test_only_streams_get_a_messages_sent_series():
    metrics = Metrics()
    assert metrics.method("unary", "/poet.v1.PoetService/ListDomains").sent is None
    metrics.method("server_stream", "/poet.v1.PoetService/StreamEvents").sent.inc()
    assert value(metrics, "grpc_server_msg_sent_total", grpc_type="server_stream", grpc_service="poet.v1.PoetService",
                 grpc_method="StreamEvents") == 1


def _literal_first_arguments(callee: str) -> set[str]:
    found = set()
    for path in GENERATOR_SOURCES.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == callee
                    and node.args and isinstance(node.args[0], ast.Constant)):
                found.add(node.args[0].value)
    return found


def test_gate_checks_name_every_check_the_gate_can_fail():
    raised = _literal_first_arguments("GateError") | _literal_first_arguments("_Rejected")
    assert raised, "no check found: the scan is broken"
    assert raised <= GATE_CHECKS, f"checks the metrics do not know: {sorted(raised - GATE_CHECKS)}"


def test_a_rejection_reason_outside_the_gate_checks_counts_as_other():
    metrics = Metrics()
    metrics.gate_checked("gemini", 0.2, rejected="signature")
    metrics.gate_checked("gemini", 0.1, rejected="whatever the sandbox said")
    metrics.gate_checked("template", None, rejected="capability")  # failed before it was timed
    assert value(metrics, "poet_gate_rejections_total", generator="gemini", reason="signature") == 1
    assert value(metrics, "poet_gate_rejections_total", generator="gemini", reason="other") == 1
    assert value(metrics, "poet_gate_rejections_total", generator="template", reason="capability") == 1
    assert value(metrics, "poet_gate_duration_seconds_count", generator="gemini") == 2
    assert value(metrics, "poet_gate_duration_seconds_count", generator="template") is None


def test_llm_outcomes_and_learning_patterns_are_fixed_sets():
    # The outcomes the README lists; every outcome made in _llm is one of these constants.
    documented = {"ok", "cached", "breaker_open", "timeout", "rate_limited", "server_error", "client_error",
                  "connection_error", "empty_response", "malformed_output", "policy_rejected", "gate_rejected", "error"}
    tree = ast.parse(Path(_llm.__file__).read_text(encoding="utf-8"))
    made = {node.args[0].id for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("LLMOutcome", "_CallFailed")
            and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id.isupper()}
    assert len(made) >= 10, "the scan is broken"
    assert {getattr(_llm, name) for name in made} <= documented
    assert {_llm.MALFORMED_OUTPUT, _llm.GATE_REJECTED} <= documented  # chosen by a condition in the gate's except
    patterns = {node.args[0].value for node in ast.walk(ast.parse(Path(learning.__file__).read_text(encoding="utf-8")))
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Finding"
                and node.args and isinstance(node.args[0], ast.Constant)}
    assert patterns == {"threshold_too_sensitive", "missing_edge_case", "high_error_rate", "low_user_rating",
                        "duration_regression"}


def test_the_log_gauges_and_consumer_lag_are_read_when_scraped(tmp_path):
    metrics = Metrics()
    assert value(metrics, "poet_event_log_events") == 0
    assert value(metrics, "poet_event_log_oldest_position") == 0  # empty
    head = [1, 0]
    metrics.watch_log(lambda: tuple(head))
    metrics.consumer_position("learning", 0)
    metrics.consumer_position("sink:hook", 0)
    head[1] = 40
    metrics.consumer_position("learning", 40)
    assert value(metrics, "poet_event_consumer_lag_events", consumer="learning") == 0
    assert value(metrics, "poet_event_consumer_lag_events", consumer="sink:hook") == 40
    head[0] = 31  # retention trimmed the first 30
    assert value(metrics, "poet_event_log_events") == 10
    assert value(metrics, "poet_event_log_oldest_position") == 31
    assert value(metrics, "poet_event_log_newest_position") == 40
    database = tmp_path / "poet.db"
    metrics.watch_store_file(database)
    assert value(metrics, "poet_store_file_bytes") == 0  # not there (yet)
    database.write_bytes(b"x" * 100)
    Path(f"{database}-wal").write_bytes(b"y" * 20)
    assert value(metrics, "poet_store_file_bytes") == 120


def test_breaker_states_are_numbers():
    metrics = Metrics()
    states = {"hook": "closed"}
    metrics.sink("hook", lambda: states["hook"])
    assert value(metrics, "poet_llm_breaker_state") is None  # no Gemini key: no series
    metrics.watch_llm_breaker(lambda: "half_open")
    assert value(metrics, "poet_sink_breaker_state", sink="hook") == 0
    states["hook"] = "open"
    assert value(metrics, "poet_sink_breaker_state", sink="hook") == 1
    assert value(metrics, "poet_llm_breaker_state") == 0.5


def test_seed_enhancement_metrics():
    metrics = Metrics()
    metrics.enhancement_done("computation", True, 0.3)
    metrics.enhancement_done("computation", False, 0.01)
    assert value(metrics, "poet_enhancement_requests_total", domain="computation", status="success") == 1
    assert value(metrics, "poet_enhancement_requests_total", domain="computation", status="error") == 1
    assert value(metrics, "poet_enhancement_duration_seconds_count", domain="computation") == 2
    assert value(metrics, "poet_enhancement_duration_seconds_bucket", domain="computation", le="0.5") == 2
