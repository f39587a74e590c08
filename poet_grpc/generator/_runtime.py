"""Source text of the helpers a function's POET section defines (standard library only).

Every block here is placed inside the section's factory, `_poet_enhance_<name>()`
(see _render), so each enhanced function of a module has its own parameters, metrics
and helpers: they are the factory's local variables, closed over by the enhanced
function. The builtins they read are bound in the factory too, so a module that
rebinds `len` or star-imports numpy cannot change them.

Cost policy: the enhanced sync function does on each call only what cannot wait:
the argument and result checks (an exact-class test first), the call, two counters.
Everything else (retries, backoff, recording a failure, reporting a contract
violation, events) runs on the path that needs it. No thread is started per call;
a hard deadline on sync code (a thread per call) is opt-in (hard_timeout).

Each block is emitted only when the generated function needs it. Helpers read their
settings from _POET_PARAMS (also `<name>.poet_params`) at call time, so a loaded
module can be tuned without regenerating it.
"""

from __future__ import annotations

TRANSIENT_ERRORS = ("ConnectionError", "TimeoutError")
"""Exceptions Operate retries, with their subclasses (ConnectionResetError,
ConnectionRefusedError, ConnectionAbortedError, BrokenPipeError, socket.timeout...).
Deliberately conservative: other OSErrors (file not found, permission denied...)
are not transient and are never retried."""

STATE = '''\
_POET_TRANSIENT_ERRORS = ({transient})
"""Operate retries these (and their subclasses) only; any other error propagates at once."""
_POET_METRICS = {{
    "successes": 0,
    "failures": 0,
    "rejected_inputs": 0,
    "rejected_outputs": 0,
    "contract_violations": 0,
    "retries": 0,
    "timeouts": 0,
    "total_duration_seconds": 0.0,
    "last_error": None,
}}
"""Train: in-process execution metrics of {name}() (see _poet_Metrics). A success is counted without
a lock (exact under the GIL); total_duration_seconds is measured only when events are configured."""
_poet_metrics_lock = _poet_threading.Lock()
_poet_retrying = _poet_contextvars.ContextVar("_poet_retrying", default=False)
"""True while a call of {name}() retries: the calls it makes to {name}() itself then do not retry too."""
_poet_reported = set()
"""(parameter, type seen) pairs already reported as contract violations (at most 100)."""
_poet_clock = _poet_time.perf_counter
_poet_wall_clock = _poet_time.time
_poet_cpu_clock = _poet_time.process_time
"""The clocks as they were at import: a caller's test that patches time.time (funcy's do) keeps
every value it feeds for itself."""


class _poet_Metrics(_poet_abc.Mapping):
    """{name}.poet_metrics: a live, read-only view of _POET_METRICS, with "calls" (successes
    plus failures) and the module's event counters (events_sent, events_dropped, events_failed)."""

    def __getitem__(self, key):
        if key == "calls":
            return _POET_METRICS["successes"] + _POET_METRICS["failures"]
        if key in _POET_METRICS:
            return _POET_METRICS[key]
        return _POET_EVENTS[key]

    def __iter__(self):
        yield "calls"
        yield from _POET_METRICS
        yield from _POET_EVENTS

    def __len__(self):
        return 1 + len(_POET_METRICS) + len(_POET_EVENTS)

    def __repr__(self):
        return repr(dict(self))
'''

JITTER = '''\
_poet_jitter = _poet_random.Random()
"""Jitter's own generator: the module-level `random` state is never touched."""
'''

VIOLATION = '''
def _poet_shown(value, show_value):
    """The value's type name, or (show_value) the value itself, shortened."""
    shown = value.__class__.__name__
    if show_value:
        try:
            shown = f"{value!r}"
            shown = shown if not shown[80:] else shown[:77] + "..."
        except Exception:  # a broken __repr__: the type will do
            pass
    return shown


def _poet_violation(parameter, expected, value, show_value=False):
    """A value its annotation does not allow (`parameter` "" for the result).

    annotation_checks "enforce": TypeError, the call is refused. "observe" (the default):
    counted in contract_violations and reported once per parameter and type seen (a
    function.contract_violation event), and the call goes on as the original's would.
    """
    if _POET_PARAMS.get("annotation_checks") == "enforce":
        if parameter:
            message = f"{_POET_FUNCTION}() argument {parameter!r} must be {expected}, not {_poet_shown(value, show_value)}"
        else:
            message = f"{_POET_FUNCTION}() must return {expected}, not {_poet_shown(value, show_value)}"
        raise TypeError(message)
    try:
        seen = value.__class__.__name__
        key = (parameter, seen)
        with _poet_metrics_lock:
            _POET_METRICS["contract_violations"] += 1
            first = key not in _poet_reported and len(_poet_reported) < 100
            if first:
                _poet_reported.add(key)
        if first:
            _poet_function_emit("function.contract_violation", {
                "function_name": _POET_IDENTITY,
                "version": _POET_VERSION,
                "parameter": parameter or "return",
                "expected": expected,
                "type_seen": seen,
            })
    except Exception:  # observing never breaks the function
        pass
'''

FINITE = '''
def _poet_is_finite(value):
    # Only Python floats can be NaN or infinite here; other accepted numbers pass.
    return not isinstance(value, float) or _poet_math.isfinite(value)


def _poet_non_finite_error(what, value):
    return ValueError(f"{_POET_FUNCTION}() {what} must be a finite number, not {value!r}")
'''

BACKOFF = '''
def _poet_is_transient(error):
    """Operate retries `error` only if this says it is transient: one of _POET_TRANSIENT_ERRORS.
    A domain may rebind this name to widen the rule (llm_optimization does)."""
    return isinstance(error, _POET_TRANSIENT_ERRORS)


def _poet_should_retry(error):
    """After a failed attempt: retry it? Only transient errors, only with retries left, and
    not inside a call of this function that is already retrying (recursion)."""
    return _POET_PARAMS["max_retries"] > 0 and _poet_is_transient(error) and not _poet_retrying.get()


def _poet_backoff_delay(retry):
    """Seconds to wait before retry number `retry` (1, 2, ...): exponential, capped, jittered."""
    params = _POET_PARAMS
    delay = params["backoff_base_seconds"] * params["backoff_multiplier"] ** (retry - 1)
    if delay > params["backoff_max_seconds"]:
        delay = params["backoff_max_seconds"]
    return delay * (1.0 - params["jitter"] * _poet_jitter.random())


def _poet_retry_delay(retry, first_failure):
    """The delay before retry `retry`, or None when there is none: past max_retries, or
    when it would end after timeout_seconds since the first failure."""
    if retry > _POET_PARAMS["max_retries"]:
        return None
    delay = _poet_backoff_delay(retry)
    timeout = _POET_PARAMS["timeout_seconds"]
    if timeout > 0 and _poet_time.monotonic() - first_failure + delay > timeout:
        return None
    return delay
'''

OPERATE_SYNC = '''
def _poet_retry(error, call, stop=None):
    """Operate, after the first attempt failed with a transient `error`: call() again
    with backoff until it returns. Any other exception propagates at once, unchanged;
    when no retry is left (max_retries, or the timeout_seconds deadline counted from
    the first failure) the last transient error propagates. `stop` (hard_timeout) is
    set at the deadline: no more retries. Retries assume the call is safe to repeat.
    """
    token = _poet_retrying.set(True)
    try:
        first_failure = _poet_time.monotonic()
        retry = 0
        while True:
            retry += 1
            delay = _poet_retry_delay(retry, first_failure)
            if delay is None or (stop is not None and stop.is_set()):
                raise error
            _poet_count("retries")
            if stop is None:
                _poet_time.sleep(delay)
            elif stop.wait(delay):
                raise error
            try:
                return call()
            except Exception as failed:
                if not _poet_is_transient(failed):
                    raise
                error = failed
    finally:
        _poet_retrying.reset(token)
'''

OPERATE_THREAD = '''
def _poet_operate_thread(call):
    """Operate with a hard deadline (hard_timeout): the call runs in a daemon worker thread
    and the caller waits at most timeout_seconds.

    The cost and the limits of that: a thread per call (about 100 microseconds); context
    variables are copied to the worker, but thread-locals are not, and locks the caller
    holds are not held by the worker (a re-entrant lock the function takes again
    deadlocks until the deadline). At the deadline the caller gets TimeoutError while the
    worker runs on until the original returns (Python cannot stop a thread); it makes no
    further retries.
    """
    timeout = _POET_PARAMS["timeout_seconds"]
    if not timeout > 0:
        try:
            return call()
        except Exception as error:
            if not _poet_should_retry(error):
                raise
            return _poet_retry(error, call)
    stop = _poet_threading.Event()
    outcome = []
    context = _poet_contextvars.copy_context()

    def attempts():
        try:
            return call()
        except Exception as error:
            if not _poet_should_retry(error):
                raise
            return _poet_retry(error, call, stop)

    def work():
        try:
            outcome.append((True, context.run(attempts)))
        except BaseException as error:  # handed over to the calling thread
            outcome.append((False, error))

    worker = _poet_threading.Thread(target=work, name=f"poet-{_POET_FUNCTION}", daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        stop.set()
        _poet_count("timeouts")
        raise TimeoutError(f"{_POET_FUNCTION}() did not finish within {timeout} s (timeout_seconds)")
    succeeded, value = outcome[0]
    if succeeded:
        return value
    raise value
'''

OPERATE_ASYNC = '''
async def _poet_retry_async(error, call):
    """Operate, after the first attempt failed with a transient `error`: await call()
    again with backoff until it returns (as _poet_retry)."""
    token = _poet_retrying.set(True)
    try:
        first_failure = _poet_time.monotonic()
        retry = 0
        while True:
            retry += 1
            delay = _poet_retry_delay(retry, first_failure)
            if delay is None:
                raise error
            _poet_count("retries")
            await _poet_asyncio.sleep(delay)
            try:
                return await call()
            except Exception as failed:
                if not _poet_is_transient(failed):
                    raise
                error = failed
    finally:
        _poet_retrying.reset(token)


async def _poet_attempts_async(call):
    try:
        return await call()
    except Exception as error:
        if not _poet_should_retry(error):
            raise
        return await _poet_retry_async(error, call)


async def _poet_operate_async(call):
    """Operate: the attempts under the deadline timeout_seconds (0: no deadline), by the
    event loop's own timeout. At the deadline the attempt is cancelled and TimeoutError
    raised; a TimeoutError raised by the original itself is a transient error like any other.
    """
    timeout = _POET_PARAMS["timeout_seconds"]
    if not timeout > 0:
        return await _poet_attempts_async(call)
    deadline = _poet_asyncio.timeout(timeout)
    try:
        async with deadline:
            return await _poet_attempts_async(call)
    except TimeoutError:
        if not deadline.expired():
            raise
        _poet_count("timeouts")
        raise TimeoutError(f"{_POET_FUNCTION}() did not finish within {timeout} s (timeout_seconds)") from None
'''

TRAIN = '''
def _poet_count(key):
    try:
        with _poet_metrics_lock:
            _POET_METRICS[key] += 1
    except Exception:  # metrics never break the function
        pass


def _poet_function_emit(event_type, payload, correlation_id="", causation_id=""):
    """An event of this function, sent where its params say (see the module's _poet_emit)."""
    _poet_emit(event_type, payload, function_name=_POET_IDENTITY, params=_POET_PARAMS,
               correlation_id=correlation_id, causation_id=causation_id)


def _poet_failed(stage, error, started, cpu):
    """Train: record a failed call (rejected in Perceive, failed in Operate, rejected in
    Enforce) and, when events are configured (`cpu`), emit its function.execution event.
    Never raises."""
    try:
        with _poet_metrics_lock:
            metrics = _POET_METRICS
            metrics["failures"] += 1
            if cpu:
                metrics["total_duration_seconds"] += _poet_clock() - started
            metrics["last_error"] = error.__class__.__name__
            if stage == "perceive":
                metrics["rejected_inputs"] += 1
            elif stage == "enforce":
                metrics["rejected_outputs"] += 1
    except Exception:  # metrics never break the function
        pass
    if cpu:
        _poet_execution_event(error, started, cpu)


def _poet_succeeded(started, cpu):
    """Train, with events configured: the success's duration and its function.execution event."""
    try:
        with _poet_metrics_lock:
            _POET_METRICS["total_duration_seconds"] += _poet_clock() - started
    except Exception:  # metrics never break the function
        pass
    _poet_execution_event(None, started, cpu)


def _poet_execution_event(error, started, cpu_started):
    """Train: one seed 002 function.execution event for the call that began at `started`."""
    try:
        end = _poet_wall_clock()
        duration = _poet_clock() - started
        cpu = _poet_cpu_clock() - cpu_started
        memory = 0.0
        if _poet_resource is not None:
            memory = _poet_resource.getrusage(_poet_resource.RUSAGE_SELF).ru_maxrss / _POET_RSS_PER_MB
        payload = {
            "function_name": _POET_IDENTITY,
            "version": _POET_VERSION,
            "execution_id": _poet_uuid4(),
            "start_time": end - duration,
            "end_time": end,
            "status": "success" if error is None else "failure",
            "metrics": {
                "duration_ms": duration * 1000.0,
                "memory_mb": round(memory, 3),
                "cpu_percent": round(100.0 * cpu / duration, 2) if duration > 0 else 0.0,
            },
        }
        if error is not None:
            try:
                message = str(error)
            except Exception:
                message = ""
            payload["error"] = {"type": error.__class__.__name__, "message": message[:500]}
        _poet_function_emit("function.execution", payload)
    except Exception:  # events never break the function
        pass
'''
