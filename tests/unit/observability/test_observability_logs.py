"""poet_grpc.observability.logs: the two formats, the ids on every line, levels
that keep libraries quiet, redaction, and output captured in JSON mode."""

from __future__ import annotations

import contextvars
import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest

from poet_grpc.observability import logs, tracing


@pytest.fixture(autouse=True)
def restore_logging():
    """configure() changes process-wide state: put it back after each test."""
    names = ["", "poet_grpc", "httpx", "grpc", "third.party", *logs.NOISY]
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    for logger, handler in logs._installed:
        logger.removeHandler(handler)
    logs._installed.clear()
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    logs.console.propagate = True
    logging.captureWarnings(False)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.parametrize("spec, expected", [
    ("", (logging.INFO, {})),
    ("debug", (logging.DEBUG, {})),
    ("WARNING,httpx=DEBUG, poet_grpc.core=ERROR", (logging.WARNING, {"httpx": logging.DEBUG,
                                                                     "poet_grpc.core": logging.ERROR})),
    ("httpx=DEBUG", (logging.INFO, {"httpx": logging.DEBUG})),
])
def test_the_level_names_poet_s_level_and_other_loggers(spec, expected):
    assert logs.parse_level(spec) == expected


@pytest.mark.parametrize("spec", ["LOUD", "=DEBUG", "DEBUG,INFO", "httpx=LOUD"])
def test_a_malformed_level_is_refused(spec):
    with pytest.raises(ValueError, match="log_level"):
        logs.parse_level(spec)


def test_an_unknown_format_is_refused():
    with pytest.raises(ValueError, match="log_format"):
        logs.configure("INFO", "xml")


def test_json_lines_carry_the_fields_and_the_ids_of_the_call(capsys, monkeypatch):
    logs.configure("INFO", "json")

    def serving():
        logs.bind_request("req-1", "corr-1")
        logging.getLogger("poet_grpc.core").info("stored %s", "v2", extra={"version": "v2"})

    contextvars.copy_context().run(serving)
    logging.getLogger("poet_grpc.core").warning("between calls")
    first, second = json_lines(capsys.readouterr().err)
    assert first["time"].endswith("Z") and first["level"] == "INFO" and first["logger"] == "poet_grpc.core"
    assert first["message"] == "stored v2" and first["version"] == "v2"
    assert (first["request_id"], first["correlation_id"]) == ("req-1", "corr-1")
    assert (second["request_id"], second["correlation_id"], second["trace_id"]) == ("", "", "")

    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    provider = tracing.configure()
    try:
        with tracing.span("rpc") as span:
            logging.getLogger("poet_grpc").info("traced")
        [traced] = json_lines(capsys.readouterr().err)
    finally:
        tracing.shutdown(provider)
    context = span.get_span_context()
    assert (traced["trace_id"], traced["span_id"]) == (format(context.trace_id, "032x"), format(context.span_id, "016x"))


def test_json_puts_an_exception_on_its_line(capsys):
    logs.configure("INFO", "json")
    try:
        raise KeyError("missing")
    except KeyError:
        logging.getLogger("poet_grpc").exception("failed")
    [line] = json_lines(capsys.readouterr().err)
    assert line["level"] == "ERROR" and "KeyError: 'missing'" in line["exc_info"]


def test_text_keeps_serve_s_lines_as_they_were(capsys):
    logs.configure("INFO", "text")
    logs.console.info("gRPC listening on 127.0.0.1:50051 (db poet.db)")
    logs.console.warning("submitted code is not confined (--sandbox process); see the README")
    logs.console.error("cannot start: no sandbox")
    logging.getLogger("poet_grpc.core").info("stored v2")
    out, err = capsys.readouterr()
    assert out == "poet-grpc: gRPC listening on 127.0.0.1:50051 (db poet.db)\n"
    lines = err.splitlines()
    assert lines[:2] == ["poet-grpc: WARNING: submitted code is not confined (--sandbox process); see the README",
                         "poet-grpc: cannot start: no sandbox"]
    assert lines[2].endswith(" INFO poet_grpc.core: stored v2")


def test_serve_s_lines_show_at_any_level(capsys):
    logs.configure("ERROR", "json")
    logs.console.info("stopped")
    logging.getLogger("poet_grpc").warning("hidden")
    assert [line["message"] for line in json_lines(capsys.readouterr().err)] == ["stopped"]


def test_at_debug_libraries_stay_quiet_unless_named(capsys):
    logs.configure("DEBUG", "json")
    logging.getLogger("poet_grpc.core").debug("ours")
    logging.getLogger("third.party").debug("hidden: libraries log INFO and above")
    logging.getLogger("third.party").info("shown")
    logging.getLogger("grpc._cython.cygrpc").info("hidden: a noisy one")
    logging.getLogger("httpx").debug("hidden")
    logs.configure("DEBUG,httpx=DEBUG", "json")
    logging.getLogger("httpx").debug("named")
    assert [line["message"] for line in json_lines(capsys.readouterr().err)] == ["ours", "shown", "named"]


API_KEY = "pk_agent_" + "a" * 24
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0cmFuc3BpbGVyLTEifQ.c2lnbmF0dXJlLWJ5dGVz"


@pytest.mark.parametrize("text", [
    f"authorization: Bearer {API_KEY}",
    f"metadata (('authorization', 'Bearer {API_KEY}'),)",
    f"token {JWT} refused",
    f"GET https://generativelanguage.googleapis.com/v1/models?key={API_KEY}&alt=sse",
    f'{{"api_key": "{API_KEY}"}}',
    f"x-goog-api-key={API_KEY}",
    "configured with AIzaSyD-0123456789abcdefghijklmnopqrstu",
])
def test_what_looks_like_a_credential_is_redacted(text):
    clean = logs.redact(text)
    assert "[REDACTED]" in clean
    assert API_KEY not in clean and JWT not in clean and "AIzaSy" not in clean


def test_no_credential_reaches_a_line(capsys):
    logs.configure("INFO", "json", secrets=["gemini-key-1234"])
    log = logging.getLogger("poet_grpc")
    log.info("calling with %s", "gemini-key-1234")
    log.info("headers", extra={"headers": f"authorization: Bearer {API_KEY}"})
    try:
        raise ValueError(f"bad token {JWT}")
    except ValueError:
        log.exception("refused")
    output = capsys.readouterr().err
    assert len(json_lines(output)) == 3
    for secret in ("gemini-key-1234", API_KEY, JWT):
        assert secret not in output
    assert "function_name=area" == logs.redact("function_name=area")  # no false alarm on ordinary words


def test_json_mode_captures_what_bypasses_logging():
    """C libraries, child processes and stray prints write to the file descriptors:
    with capture_output their lines come back as JSON lines too."""
    script = textwrap.dedent("""
        import logging, os, subprocess, sys
        from poet_grpc.observability import logs
        logs.configure("INFO", "json", capture_output=True)
        logs.console.info("started")
        os.write(1, b"raw on stdout\\n")
        print("printed to stderr", file=sys.stderr, flush=True)
        subprocess.run(["sh", "-c", "echo from a child >&2"], check=True)
        logging.getLogger("poet_grpc").info("done")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    lines = json_lines(result.stderr)
    assert {line["message"] for line in lines} == {"started", "raw on stdout", "printed to stderr", "from a child",
                                                    "done"}
    captured = [line for line in lines if line["logger"] == "poet_grpc.output"]
    assert len(captured) == 3 and {line["level"] for line in captured} == {"WARNING"}
