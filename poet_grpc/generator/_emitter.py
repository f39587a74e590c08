"""Source text of the event emitter every generated module contains (standard library only).

The Train stage reports each call of the enhanced function as a seed 002
`function.execution` event; domain stages send their own events the same way.
Inside a generated module:

    _poet_emit(event_type, payload, *, correlation_id="", causation_id="") -> None

never raises and never blocks: it appends the event to a bounded in-process queue
(`events_queue_size`, default 10000; when full the oldest event is dropped and
counted in `events_dropped`). A daemon thread, started on the first event, sends
batches (`events_batch_size` events, default 100, or whatever arrived within
`events_flush_seconds`, default 1.0) as `{"events": [...]}` JSON to
`{url}/api/v1/events:publish` (the REST gateway's PublishEvents), with a 2 s
timeout and up to 3 attempts with backoff on connection errors and 5xx answers;
a batch that still fails is dropped and counted in `events_failed` (sent ones in
`events_sent`). At interpreter exit the queue is flushed for at most 2 s.

The destination is `_POET_PARAMS["events_url"]` when non-empty, else the
environment variable POET_EVENTS_URL, read at call time. With neither set,
nothing is queued, measured or sent: the per-call cost is two dictionary lookups.
A service that requires authentication gets `authorization: Bearer <token>`
with the token from the environment variable POET_EVENTS_TOKEN, read at send
time. Never from the params: those are stored in the version's code and in its
event, which every viewer may read.

Execution metrics are best effort: memory_mb is the process's peak RSS so far;
cpu_percent is the process's CPU time during the call (all its threads) over the
call's wall time, so it can exceed 100 on several cores.

SOURCE is fixed text (no substitutions): the gate recognises this exact block
(CANONICAL) and exempts it, and only it, from the network-capability scan.
It relies on the module's _POET_FUNCTION, _POET_PARAMS, _POET_METRICS,
_poet_metrics_lock, _poet_threading and _poet_time, and reads _POET_VERSION at
call time (the version the service stored the code as; "" when unknown).
"""

from __future__ import annotations

from typing import Any

DEFAULTS: dict[str, Any] = {
    "events_url": "",
    "events_queue_size": 10000,
    "events_batch_size": 100,
    "events_flush_seconds": 1.0,
}
"""Emitter parameters and their defaults (as hard-coded in SOURCE)."""

ENDPOINT = "/api/v1/events:publish"
SOURCE_NAME = "poet.enhanced_function"
METRICS = ("events_sent", "events_dropped", "events_failed")
"""Keys the emitter adds to the module's _POET_METRICS."""

SOURCE = '''
import atexit as _poet_atexit
import builtins as _poet_builtins
import collections as _poet_collections
import os as _poet_os
import sys as _poet_sys
import threading as _poet_threading
import time as _poet_time

try:
    import resource as _poet_resource
except ImportError:  # not on this platform: memory_mb is reported as 0.0
    _poet_resource = None
_POET_RSS_PER_MB = 1048576.0 if _poet_sys.platform == "darwin" else 1024.0
"""ru_maxrss is in bytes on macOS, in kilobytes elsewhere."""
_poet_ev_clock = _poet_time.time
"""The wall clock as at import: a caller's test that patches time.time keeps every value it feeds."""
_POET_EVENTS = {"events_sent": 0, "events_dropped": 0, "events_failed": 0}
"""The module's event counters, shared by its enhanced functions (each shows them in poet_metrics)."""
_POET_EVENTS_ENV_URL = _poet_os.environ.get("POET_EVENTS_URL") or ""
"""$POET_EVENTS_URL when the module was imported: where events go when a function's params set no events_url."""
_poet_ev_settings = {}
"""Queue size, batch size and flush interval: from the params of the first function that emits."""
_poet_ev_lock = _poet_threading.Lock()


def _poet_ev_param(key, default, low, high):
    """An emitter setting, or its default when missing or out of range."""
    value = _poet_ev_settings.get(key, default)
    b = _poet_builtins
    if b.isinstance(value, b.bool) or not b.isinstance(value, (b.int, b.float)) or not low <= value <= high:
        return default
    return value


_poet_ev_cond = _poet_threading.Condition(_poet_threading.Lock())
_poet_ev_state = {"thread": None, "busy": False, "flush": False, "configured": False, "queue": _poet_collections.deque()}
"""The sender's state; "queue" holds the events waiting to be sent, oldest first (bounded at
the first event: when full, appending drops the oldest)."""


def _poet_events_url(params):
    """Where a function's events go: its params' events_url, else $POET_EVENTS_URL; "" for nowhere."""
    url = params.get("events_url") or _POET_EVENTS_ENV_URL
    return url if url and _poet_builtins.isinstance(url, _poet_builtins.str) else ""


def _poet_ev_count(key, n=1):
    try:
        with _poet_ev_lock:
            _POET_EVENTS[key] = _POET_EVENTS.get(key, 0) + n
    except Exception:  # metrics never break the function
        pass


def _poet_uuid4():
    """A random (version 4) UUID as text, without importing uuid at module load."""
    raw = _poet_builtins.bytearray(_poet_os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]


def _poet_ev_timestamp(seconds):
    """RFC 3339 UTC, microseconds: 2025-06-13T09:30:00.123456Z."""
    whole = _poet_builtins.int(seconds)
    micros = _poet_builtins.int((seconds - whole) * 1000000)
    return _poet_time.strftime("%Y-%m-%dT%H:%M:%S", _poet_time.gmtime(whole)) + ".%06dZ" % micros


def _poet_emit(event_type, payload, *, function_name, params, correlation_id="", causation_id=""):
    """Queue one event of function_name (whose params say where events go) for the events
    endpoint; never raises, never blocks on I/O. A no-op when no destination is configured.
    """
    try:
        url = _poet_events_url(params)
        if not url:
            return
        # The caller pays for a shallow copy only; the sender thread builds the event.
        copied = _poet_builtins.dict(payload) if payload else {}
        event = (event_type, copied, correlation_id, causation_id, _poet_ev_clock(), function_name, url)
        with _poet_ev_cond:
            if not _poet_ev_state["configured"]:  # the first event: its function's settings
                _poet_ev_state["configured"] = True
                for key in ("events_queue_size", "events_batch_size", "events_flush_seconds"):
                    if key in params:
                        _poet_ev_settings[key] = params[key]
                size = _poet_builtins.int(_poet_ev_param("events_queue_size", 10000, 1, 10000000))
                _poet_ev_state["queue"] = _poet_collections.deque(_poet_ev_state["queue"], maxlen=size)
            queue = _poet_ev_state["queue"]
            dropped = _poet_builtins.len(queue) >= queue.maxlen
            queue.append(event)
            if _poet_ev_state["thread"] is None:
                _poet_ev_start()
            size = _poet_builtins.len(queue)
            if size == 1 or size >= _poet_ev_param("events_batch_size", 100, 1, 10000):
                _poet_ev_cond.notify_all()
        if dropped:
            _poet_ev_count("events_dropped")
    except Exception:  # events never break the function
        pass


def _poet_ev_start():
    """Start the sender thread (caller holds _poet_ev_cond)."""
    thread = _poet_threading.Thread(target=_poet_ev_run, name="poet-events", daemon=True)
    thread.start()
    _poet_ev_state["thread"] = thread
    _poet_atexit.register(_poet_ev_at_exit)


def _poet_ev_run():
    """The sender thread: waits for a full batch or events_flush_seconds, then sends."""
    cond, state, queue = _poet_ev_cond, _poet_ev_state, _poet_ev_state["queue"]
    while True:
        try:
            with cond:
                while not queue and not state["flush"]:
                    cond.wait()
                batch = _poet_builtins.int(_poet_ev_param("events_batch_size", 100, 1, 10000))
                wait = _poet_ev_param("events_flush_seconds", 1.0, 0.0, 3600.0)
                deadline = _poet_time.monotonic() + wait
                while _poet_builtins.len(queue) < batch and not state["flush"]:
                    remaining = deadline - _poet_time.monotonic()
                    if remaining <= 0:
                        break
                    cond.wait(remaining)
                count = _poet_builtins.min(batch, _poet_builtins.len(queue))
                events = [queue.popleft() for _ in _poet_builtins.range(count)]
                state["busy"] = _poet_builtins.bool(events)
            if events:
                _poet_ev_send(events)
        except Exception:  # keep the sender alive whatever happens
            pass
        with cond:
            state["busy"] = False
            if not queue:
                state["flush"] = False
            cond.notify_all()


def _poet_ev_send(events):
    """POST one batch; up to 3 attempts on connection errors and 5xx answers."""
    import json
    import urllib.error
    import urllib.request

    batches = {}
    environment = _poet_os.environ.get("POET_ENVIRONMENT") or "production"
    for event_type, payload, correlation_id, causation_id, created, function_name, url in events:
        event = {
            "id": _poet_uuid4(),  # once per event: a retried batch keeps its ids (the log dedups them)
            "type": _poet_builtins.str(event_type),
            "source": "poet.enhanced_function",
            "timestamp": _poet_ev_timestamp(created),
            "correlation_id": _poet_builtins.str(correlation_id or ""),
            "causation_id": _poet_builtins.str(causation_id or ""),
            "function_name": function_name,
            "metadata": {"version": "1.0", "service": "poet.enhanced_function", "environment": environment},
            "payload": payload,
        }
        try:
            text = json.dumps(event, default=_poet_builtins.str, allow_nan=False, separators=(",", ":"))
        except Exception:  # not JSON (NaN, a cycle...): this event cannot be sent
            _poet_ev_count("events_failed")
            continue
        batches.setdefault(url, []).append(text)
    for url, parts in batches.items():
        _poet_ev_post(url, parts, urllib)


def _poet_ev_post(url, parts, urllib):
    """POST events (JSON texts) to one destination; up to 3 attempts."""
    if not url.startswith(("http://", "https://")):
        _poet_ev_count("events_failed", _poet_builtins.len(parts))
        return
    body = ('{"events":[' + ",".join(parts) + "]}").encode("utf-8")
    endpoint = url.rstrip("/") + "/api/v1/events:publish"
    headers = {"Content-Type": "application/json"}
    token = _poet_os.environ.get("POET_EVENTS_TOKEN")
    if token:
        headers["Authorization"] = "Bearer " + token
    for attempt in _poet_builtins.range(3):
        if attempt:
            _poet_time.sleep(0.1 * 4 ** (attempt - 1))
        try:
            request = urllib.request.Request(
                endpoint, data=body, method="POST", headers=headers
            )
            with urllib.request.urlopen(request, timeout=2.0) as response:  # nosec B310: http(s) only
                response.read()
            _poet_ev_count("events_sent", _poet_builtins.len(parts))
            return
        except urllib.error.HTTPError as error:
            if error.code < 500:
                break  # the gateway refuses this batch: retrying would not help
        except Exception:  # connection refused, timeout, reset...: retry
            pass
    _poet_ev_count("events_failed", _poet_builtins.len(parts))


def _poet_flush_events(timeout=5.0):
    """Wait until every queued event was sent or dropped, at most `timeout` seconds.

    True when the queue is empty and nothing is in flight.
    """
    deadline = _poet_time.monotonic() + timeout
    with _poet_ev_cond:
        if _poet_ev_state["thread"] is None:
            return not _poet_ev_state["queue"]
        _poet_ev_state["flush"] = True
        _poet_ev_cond.notify_all()
        while _poet_ev_state["queue"] or _poet_ev_state["busy"]:
            remaining = deadline - _poet_time.monotonic()
            if remaining <= 0:
                return False
            _poet_ev_cond.wait(remaining)
        return True


def _poet_ev_at_exit():
    try:
        _poet_flush_events(2.0)
    except Exception:
        pass


def _poet_ev_after_fork():
    """In a forked child the sender thread is gone: start afresh, without the parent's events."""
    global _poet_ev_cond
    _poet_ev_cond = _poet_threading.Condition(_poet_threading.Lock())
    _poet_ev_state.update(thread=None, busy=False, flush=False)
    _poet_ev_state["queue"].clear()


try:
    _poet_os.register_at_fork(after_in_child=_poet_ev_after_fork)
except AttributeError:  # no fork on this platform
    pass

'''

CANONICAL = SOURCE.strip("\n")
"""The block exactly as it appears in a generated module."""
