"""The event emitter of generated modules: function.execution events reach the
REST gateway's events:publish endpoint (a local HTTP server here), in batches,
with retries; without configuration nothing happens; nothing ever blocks or
breaks the enhanced function."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from poet_grpc.core.models import EnhancementSpec
from poet_grpc.generator import AnalysisError, _emitter, generate

SOURCE = '''
def ratio(a: float, b: float) -> float:
    """a / b."""
    return a / b
'''


class _Collector:
    """A fake REST gateway: records the JSON bodies POSTed to it."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.attempts = 0
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with collector.lock:
                    collector.attempts += 1
                    status = collector.statuses.pop(0) if collector.statuses else 200
                    if status == 200:
                        collector.bodies.append(json.loads(body))
                        collector.paths.append(self.path)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"results": []}')

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            return [e for body in self.bodies for e in body["events"]]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(autouse=True)
def _no_proxy_no_url(monkeypatch: pytest.MonkeyPatch) -> None:
    proxies = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")
    for name in ("POET_EVENTS_URL", *proxies):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("POET_ENVIRONMENT", raising=False)


@pytest.fixture
def collector() -> Iterator[Callable[..., _Collector]]:
    made: list[_Collector] = []

    def _make(statuses: list[int] | None = None) -> _Collector:
        made.append(_Collector(statuses))
        return made[-1]

    yield _make
    for c in made:
        c.close()


def _module(load: Callable[[str], Any], version: str = "", **config: Any) -> Any:
    config = {"annotation_checks": "enforce", **config}  # a refused argument is one failed call
    code = generate(EnhancementSpec(function_name="ratio", original_code=SOURCE, config=config), version=version)
    return load(code.python)


def _wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_module_contains_the_canonical_emitter_and_its_version(gen) -> None:
    python = generate(EnhancementSpec(function_name="ratio", original_code=SOURCE), version="v7").python
    assert _emitter.CANONICAL in python
    assert '_POET_VERSION = "v7"' in python
    assert '_POET_VERSION = ""' in gen(SOURCE, "ratio").python


def test_events_arrive_with_the_rest_shape(load, collector, monkeypatch) -> None:
    server = collector()
    monkeypatch.setenv("POET_EVENTS_URL", server.url + "/")
    monkeypatch.setenv("POET_ENVIRONMENT", "staging")
    module = _module(load, version="v3")
    before = time.time()
    assert module.ratio(6.0, 3.0) == 2.0
    with pytest.raises(ZeroDivisionError):
        module.ratio(1.0, 0.0)
    with pytest.raises(TypeError):
        module.ratio("x", 1.0)
    assert module.ratio.poet_flush_events(5.0) is True
    _wait_for(lambda: len(server.events) == 3)
    assert set(server.paths) == {"/api/v1/events:publish"}
    ok, failed, rejected = server.events
    for event in (ok, failed, rejected):
        assert set(event) == {
            "id", "type", "source", "timestamp", "correlation_id", "causation_id", "function_name", "metadata", "payload"
        }
        assert uuid.UUID(event["id"]).version == 4
        assert event["type"] == "function.execution"
        assert event["source"] == "poet.enhanced_function"
        assert event["function_name"] == "ratio"
        assert event["metadata"] == {"version": "1.0", "service": "poet.enhanced_function", "environment": "staging"}
        assert event["timestamp"].endswith("Z") and event["timestamp"][10] == "T"
        payload = event["payload"]
        assert payload["function_name"] == "ratio" and payload["version"] == "v3"
        assert uuid.UUID(payload["execution_id"]).version == 4
        assert before - 1 <= payload["start_time"] <= payload["end_time"] <= time.time() + 1
        assert set(payload["metrics"]) == {"duration_ms", "memory_mb", "cpu_percent"}
        assert payload["metrics"]["duration_ms"] >= 0 and payload["metrics"]["memory_mb"] > 0
        assert payload["metrics"]["cpu_percent"] >= 0
    assert ok["payload"]["status"] == "success" and "error" not in ok["payload"]
    assert failed["payload"]["status"] == "failure"
    assert failed["payload"]["error"] == {"type": "ZeroDivisionError", "message": "float division by zero"}
    assert rejected["payload"]["error"]["type"] == "TypeError"
    assert len({e["id"] for e in server.events}) == 3
    assert module.ratio.poet_metrics["events_sent"] == 3


def test_emit_sends_custom_events_with_correlation(load, collector) -> None:
    server = collector()
    module = _module(load, events_url=server.url)
    module._poet_emit("drift.detected", {"score": 0.7}, correlation_id="c-1", causation_id="e-0", function_name="ratio", params=module.ratio.poet_params)
    assert module._poet_flush_events(5.0)
    _wait_for(lambda: len(server.events) == 1)
    (event,) = server.events
    assert event["type"] == "drift.detected" and event["payload"] == {"score": 0.7}
    assert event["correlation_id"] == "c-1" and event["causation_id"] == "e-0"
    assert event["metadata"]["environment"] == "production"


def test_long_error_messages_are_truncated(load, collector) -> None:
    server = collector()
    module = load(
        generate(
            EnhancementSpec(
                function_name="boom",
                original_code="def boom():\n    raise ValueError('x' * 2000)\n",
                config={"events_url": server.url},
            )
        ).python
    )
    with pytest.raises(ValueError):
        module.boom()
    assert module.boom.poet_flush_events(5.0)
    _wait_for(lambda: len(server.events) == 1)
    assert server.events[0]["payload"]["error"]["message"] == "x" * 500


def test_batches_respect_the_batch_size(load, collector) -> None:
    server = collector()
    module = _module(load, events_url=server.url, events_batch_size=3, events_flush_seconds=5.0)
    for i in range(7):
        module.ratio(float(i), 1.0)
    _wait_for(lambda: len(server.events) == 6)  # two full batches, without waiting 5 s
    assert module.ratio.poet_flush_events(5.0)
    _wait_for(lambda: len(server.events) == 7)
    assert [len(b["events"]) for b in server.bodies] == [3, 3, 1]


def test_a_partial_batch_is_sent_after_flush_seconds(load, collector) -> None:
    server = collector()
    module = _module(load, events_url=server.url, events_flush_seconds=0.05)
    module.ratio(1.0, 1.0)
    _wait_for(lambda: len(server.events) == 1, timeout=3.0)


def test_server_errors_are_retried(load, collector) -> None:
    server = collector([500, 503])
    module = _module(load, events_url=server.url)
    module.ratio(1.0, 2.0)
    assert module.ratio.poet_flush_events(10.0)
    _wait_for(lambda: len(server.events) == 1)
    assert server.attempts == 3
    assert module.ratio.poet_metrics["events_failed"] == 0


def test_a_batch_failing_three_times_is_dropped_and_counted(load, collector) -> None:
    server = collector([500, 500, 500])
    module = _module(load, events_url=server.url)
    module.ratio(1.0, 2.0)
    assert module.ratio.poet_flush_events(10.0)
    assert server.attempts == 3 and server.events == []
    assert module.ratio.poet_metrics["events_failed"] == 1
    module.ratio(1.0, 2.0)  # the sender lives on
    assert module.ratio.poet_flush_events(10.0)
    _wait_for(lambda: len(server.events) == 1)


def test_client_errors_are_not_retried(load, collector) -> None:
    server = collector([400])
    module = _module(load, events_url=server.url)
    module.ratio(1.0, 2.0)
    assert module.ratio.poet_flush_events(10.0)
    assert server.attempts == 1 and module.ratio.poet_metrics["events_failed"] == 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_url_never_blocks_or_breaks_the_function(load) -> None:
    module = _module(load, events_url=f"http://127.0.0.1:{_closed_port()}")
    started = time.perf_counter()
    values = [module.ratio(float(i), 2.0) for i in range(200)]
    elapsed = time.perf_counter() - started
    assert values == [i / 2.0 for i in range(200)]
    assert elapsed < 1.0
    assert module.ratio.poet_metrics["failures"] == 0
    assert module.ratio.poet_flush_events(10.0)
    assert module.ratio.poet_metrics["events_failed"] == 200


def test_a_blackholed_url_never_blocks_the_caller(load) -> None:
    # A listening socket that never accepts nor answers: each attempt waits for the 2 s timeout.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(0)
        module = _module(load, events_url=f"http://127.0.0.1:{s.getsockname()[1]}")
        started = time.perf_counter()
        assert module.ratio(3.0, 2.0) == 1.5
        module.ratio(1.0, 1.0)
        assert time.perf_counter() - started < 0.5
        started = time.perf_counter()
        assert module.ratio.poet_flush_events(0.2) is False  # the flush waits at most its budget
        assert time.perf_counter() - started < 1.0


def test_queue_overflow_drops_the_oldest_and_counts(load, collector) -> None:
    server = collector()
    module = _module(
        load, events_url=server.url, events_queue_size=5, events_flush_seconds=60.0, events_batch_size=1000
    )
    module._poet_ev_state["thread"] = "held"  # no sender while the queue fills up
    for i in range(8):
        module._poet_emit("test.event", {"i": i}, function_name="ratio", params=module.ratio.poet_params)
    assert len(module._poet_ev_state["queue"]) == 5
    assert module.ratio.poet_metrics["events_dropped"] == 3
    with module._poet_ev_cond:
        module._poet_ev_start()
    assert module.ratio.poet_flush_events(5.0)
    _wait_for(lambda: len(server.events) == 5)
    assert [e["payload"]["i"] for e in server.events] == [3, 4, 5, 6, 7]


def test_nothing_happens_without_configuration(load) -> None:
    module = _module(load)
    threads = threading.active_count()
    assert module.ratio(1.0, 4.0) == 0.25
    module._poet_emit("test.event", {"x": 1}, function_name="ratio", params=module.ratio.poet_params)
    assert len(module._poet_ev_state["queue"]) == 0
    assert module._poet_ev_state["thread"] is None
    assert threading.active_count() == threads
    assert module.ratio.poet_flush_events(0.1) is True
    metrics = module.ratio.poet_metrics
    assert metrics["events_sent"] == metrics["events_dropped"] == metrics["events_failed"] == 0


def test_the_events_url_param_is_read_at_call_time_the_environment_at_import(load, collector, monkeypatch) -> None:
    server = collector()
    module = _module(load)
    module.ratio(1.0, 1.0)  # not configured yet: not sent
    monkeypatch.setenv("POET_EVENTS_URL", server.url)
    module.ratio(1.5, 1.0)  # the environment was read at import: still not sent
    module.ratio.poet_params["events_url"] = server.url
    module.ratio(2.0, 1.0)
    assert module.ratio.poet_flush_events(5.0)
    _wait_for(lambda: len(server.events) == 1)
    assert server.events[0]["payload"]["status"] == "success"


def test_unserialisable_payloads_are_dropped_alone(load, collector) -> None:
    server = collector()
    module = _module(load, events_url=server.url)
    module._poet_emit("test.event", {"bad": float("nan")}, function_name="ratio", params=module.ratio.poet_params)
    module._poet_emit("test.event", {"odd": object()}, function_name="ratio", params=module.ratio.poet_params)  # str()
    assert module._poet_flush_events(5.0)
    _wait_for(lambda: len(server.events) == 1)
    assert server.events[0]["payload"]["odd"].startswith("<object object")
    assert module.ratio.poet_metrics["events_failed"] == 1


def test_emitter_config_is_validated() -> None:
    for config in ({"events_url": "file:///etc/passwd"}, {"events_queue_size": 0}, {"events_batch_size": "x"}):
        with pytest.raises(AnalysisError) as caught:
            generate(EnhancementSpec(function_name="ratio", original_code=SOURCE, config=config))
        assert caught.value.field == "config"


def test_defaults_in_the_source_match_DEFAULTS() -> None:
    assert '"events_queue_size", 10000,' in _emitter.SOURCE
    assert _emitter.SOURCE.count('"events_batch_size", 100,') == 2
    assert '"events_flush_seconds", 1.0,' in _emitter.SOURCE
    assert _emitter.DEFAULTS["events_queue_size"] == 10000
    assert _emitter.DEFAULTS["events_batch_size"] == 100
    assert _emitter.DEFAULTS["events_flush_seconds"] == 1.0
    assert _emitter.ENDPOINT in _emitter.SOURCE and _emitter.SOURCE_NAME in _emitter.SOURCE
