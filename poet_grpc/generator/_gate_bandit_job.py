"""The gate's bandit scan, run in the sandbox (see poet_grpc.sandbox).

This file is not imported by the server: its text is loaded by the gate's
analysis workers (standard library plus bandit from the Python runtime). Bandit
only reads the code it scans, so these workers run scans one after another in
the same warm, confined process (Sandbox in_process mode).
"""

MESSAGE_TEXT = 200

_config = None
_manager_class = None
_unavailable = ""


def _short(error):
    return "%s: %s" % (type(error).__name__, str(error)[:MESSAGE_TEXT])


def _tests_that_can_find_high():
    """The ids of bandit's tests that can report a HIGH-severity finding, the only
    ones the gate acts on: each plugin whose source names HIGH other than as a
    confidence, and the HIGH entries of the blacklists. B613 (bidirectional text)
    is left out: the gate looks for those characters itself, far faster. None (run
    every test) when bandit's sources cannot be read."""
    import inspect
    import re

    from bandit.core import extension_loader

    keep = set()
    try:
        for plugin in extension_loader.MANAGER.plugins:
            source = re.sub(r"confidence\s*=\s*(bandit\.)?HIGH", "", inspect.getsource(inspect.getmodule(plugin.plugin)))
            if re.search(r"\bHIGH\b", source) and plugin.plugin._test_id != "B613":
                keep.add(plugin.plugin._test_id)
        for tests in extension_loader.MANAGER.blacklist.values():
            keep.update(test["id"] for test in tests if test["level"] == "HIGH")
    except (OSError, TypeError, KeyError, AttributeError):
        return None
    return keep


_profile = None


def warm():
    """Load bandit and its plugins once per worker."""
    global _config, _manager_class, _unavailable, _profile
    import io
    import logging
    import warnings

    logging.getLogger("bandit").setLevel(logging.CRITICAL)  # plugin-loading chatter
    logging.getLogger("stevedore").setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from bandit.core import config as bandit_config
            from bandit.core import manager as bandit_manager
        _config = bandit_config.BanditConfig()
        _manager_class = bandit_manager.BanditManager
        tests = _tests_that_can_find_high()
        _profile = {"include": tests, "exclude": set()} if tests else None
        _new_manager()._parse_file("/warm.py", io.BytesIO(b"x = 1\n"), [])  # first-use imports happen here
    except Exception as error:  # bandit missing or broken: every scan fails closed
        _unavailable = _short(error)


def _new_manager():
    return _manager_class(_config, "file", quiet=True, ignore_nosec=True, profile=_profile)


def _scan(name, text):
    import io

    manager = _new_manager()
    manager._parse_file(name, io.BytesIO(text.encode("utf-8")), [name])
    if manager.skipped:
        raise RuntimeError("bandit could not scan: " + "; ".join("%s: %s" % (n, why) for n, why in manager.skipped)[:300])
    return [[i.test_id, i.severity, i.lineno, i.text[:200]] for i in manager.get_issue_list()]


def bandit_scan(args):
    """{"generated", "original"} -> {"generated": findings, "original": findings},
    each finding [test_id, severity, line, text]. The original is scanned only when
    the generated module has a HIGH finding (only then do the original's findings
    matter). Raises when bandit is missing or cannot scan (the gate fails closed)."""
    if _manager_class is None:
        raise RuntimeError("bandit is not available: " + _unavailable)
    generated = _scan("/generated.py", args["generated"])
    high = any(finding[1] == "HIGH" for finding in generated)
    return {"generated": generated, "original": _scan("/original.py", args["original"]) if high else []}


JOBS = {"gate.bandit": bandit_scan}
