"""Source text of the helpers the generated POET section defines (standard library only).

Each block is emitted only when the generated function needs it. Helpers read
their settings from the module's _POET_PARAMS at call time, so the Train stage
can later tune a loaded module without regenerating it. Every name they define
starts with _poet_ / _POET_; the builtins they use are exception classes only
(plus isinstance in the finiteness check and in _poet_is_transient), so a module that names a function
`max` or `sum` is unaffected.
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
    "calls": 0,
    "successes": 0,
    "failures": 0,
    "rejected_inputs": 0,
    "rejected_outputs": 0,
    "retries": 0,
    "timeouts": 0,
    "total_duration_seconds": 0.0,
    "last_error": None,
}}
"""Train: in-process execution metrics, also exposed as {name}.poet_metrics."""
_poet_metrics_lock = _poet_threading.Lock()
_poet_in_call = _poet_contextvars.ContextVar("_poet_in_call", default=False)
"""True while {name}() runs: its own recursive calls go straight to the original."""
'''

JITTER = '''\
_poet_jitter = _poet_random.Random()
"""Jitter's own generator: the module-level `random` state is never touched."""
'''

ARGUMENT_ERROR = '''
def _poet_argument_error(parameter, expected, value, show_value=False):
    """TypeError naming the parameter; the value's type, or (show_value) the value itself."""
    shown = value.__class__.__name__
    if show_value:
        try:
            shown = f"{value!r}"
            shown = shown if not shown[80:] else shown[:77] + "..."
        except Exception:  # a broken __repr__: the type will do
            pass
    return TypeError(f"{_POET_FUNCTION}() argument {parameter!r} must be {expected}, not {shown}")
'''

RESULT_ERROR = '''
def _poet_result_error(expected, value, show_value=False):
    """TypeError for a result; the value's type, or (show_value) the value itself."""
    shown = value.__class__.__name__
    if show_value:
        try:
            shown = f"{value!r}"
            shown = shown if not shown[80:] else shown[:77] + "..."
        except Exception:  # a broken __repr__: the type will do
            pass
    return TypeError(f"{_POET_FUNCTION}() must return {expected}, not {shown}")
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


def _poet_backoff_delay(retry):
    """Seconds to wait before retry number `retry` (1, 2, ...): exponential, capped, jittered."""
    params = _POET_PARAMS
    delay = params["backoff_base_seconds"] * params["backoff_multiplier"] ** (retry - 1)
    if delay > params["backoff_max_seconds"]:
        delay = params["backoff_max_seconds"]
    return delay * (1.0 - params["jitter"] * _poet_jitter.random())
'''

OPERATE_SYNC = '''
def _poet_retry(call, stop=None):
    """Operate: call() until it returns, retrying transient errors with backoff.

    Any other exception propagates at once, unchanged; after the last retry the last
    transient error propagates unchanged. `stop` is set at the deadline: no more retries.
    Retries assume the call is safe to repeat after a transient failure.
    """
    retry = 0
    while True:
        try:
            return call()
        except Exception as error:
            if not _poet_is_transient(error):
                raise
            retry += 1
            if retry > _POET_PARAMS["max_retries"] or (stop is not None and stop.is_set()):
                raise
            _poet_count("retries")
            delay = _poet_backoff_delay(retry)
            if stop is None:
                _poet_time.sleep(delay)
            elif stop.wait(delay):
                raise


def _poet_operate(call):
    """Operate: _poet_retry(call) under the deadline timeout_seconds (0: no deadline).

    Python cannot stop a running sync call from outside, so with a deadline the call
    runs in a daemon worker thread (context variables are copied to it; thread-locals
    are not) and the caller waits at most timeout_seconds. At the deadline the caller
    gets TimeoutError while the worker runs on in the background until the original
    returns; it makes no further retries.
    """
    timeout = _POET_PARAMS["timeout_seconds"]
    if not timeout > 0:
        return _poet_retry(call)
    stop = _poet_threading.Event()
    outcome = []
    context = _poet_contextvars.copy_context()

    def work():
        try:
            outcome.append((True, context.run(_poet_retry, call, stop)))
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
async def _poet_retry_async(call):
    """Operate: await call() until it returns, retrying transient errors with backoff.

    Any other exception propagates at once, unchanged; after the last retry the last
    transient error propagates unchanged.
    """
    retry = 0
    while True:
        try:
            return await call()
        except Exception as error:
            if not _poet_is_transient(error):
                raise
            retry += 1
            if retry > _POET_PARAMS["max_retries"]:
                raise
            _poet_count("retries")
            await _poet_asyncio.sleep(_poet_backoff_delay(retry))


async def _poet_operate_async(call):
    """Operate: _poet_retry_async(call) under the deadline timeout_seconds (0: no deadline).

    At the deadline the attempt is cancelled and TimeoutError raised; a TimeoutError
    raised by the original itself is a transient error like any other.
    """
    timeout = _POET_PARAMS["timeout_seconds"]
    if not timeout > 0:
        return await _poet_retry_async(call)
    task = _poet_asyncio.ensure_future(_poet_retry_async(call))
    try:
        done, _ = await _poet_asyncio.wait((task,), timeout=timeout)
    except BaseException:  # the caller was cancelled: cancel the attempt too
        task.cancel()
        raise
    if not done:
        task.cancel()
        _poet_count("timeouts")
        raise TimeoutError(f"{_POET_FUNCTION}() did not finish within {timeout} s (timeout_seconds)")
    return task.result()
'''

TRAIN = '''
def _poet_count(key):
    try:
        with _poet_metrics_lock:
            _POET_METRICS[key] += 1
    except Exception:  # metrics never break the function
        pass


def _poet_train(stage, error, started, cpu=None):
    """Train: record one call in _POET_METRICS and, when events are configured (`cpu`
    is the CPU time at the start of the call), emit its function.execution event.
    Never raises."""
    try:
        duration = _poet_time.perf_counter() - started
        with _poet_metrics_lock:
            metrics = _POET_METRICS
            metrics["calls"] += 1
            metrics["total_duration_seconds"] += duration
            if error is None:
                metrics["successes"] += 1
            else:
                metrics["failures"] += 1
                metrics["last_error"] = error.__class__.__name__
                if stage == "perceive":
                    metrics["rejected_inputs"] += 1
                elif stage == "enforce":
                    metrics["rejected_outputs"] += 1
    except Exception:  # metrics never break the function
        pass
    if cpu is not None:
        _poet_execution_event(error, started, cpu)
'''
