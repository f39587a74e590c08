"""The gate's security checks: forbidden capabilities (unless the original has
them), new high-severity bandit findings, and the event emitter's exemption,
which only its exact canonical text gets."""

from __future__ import annotations

import pytest

from poet_grpc.generator import GateError, _emitter, check_generated
from unit.generator.gate_support import ORIGINAL, WRAPPER, gate_error, generated



# (statement added to the enhanced function, module-level imports it needs, capability named)
FORBIDDEN = [
    ("exec('x = 1')", "", "exec"),
    ("eval('1 + 1')", "", "eval"),
    ("compile('1', 'f', 'eval')", "", "compile"),
    ("__import__('os')", "", "__import__"),
    ("breakpoint", "", "breakpoint"),
    ("importlib.import_module('json')", "import importlib\n", "importlib.import_module"),
    ("import_module('json')", "from importlib import import_module\n", "importlib.import_module"),
    ("os.system('true')", "import os\n", "os.system"),
    ("os.popen('true')", "import os\n", "os.popen"),
    ("os.execv('/bin/true', ['true'])", "import os\n", "os.exec*"),
    ("os.spawnl(os.P_WAIT, '/bin/true', 'true')", "import os\n", "os.spawn*"),
    ("o.system('true')", "import os as o\n", "os.system"),
    ("system('true')", "from os import system\n", "os.system"),
    ("getattr(os, 'system')('true')", "import os\n", "os.system"),
    ("subprocess.run(['true'])", "import subprocess\n", "subprocess"),
    ("run(['true'])", "from subprocess import run\n", "subprocess"),
    ("pty.spawn('true')", "import pty\n", "pty"),
    ("socket.socket()", "import socket\n", "socket"),
    ("urllib.request.urlopen('http://x')", "import urllib.request\n", "urllib"),
    ("http.client.HTTPConnection('x')", "import http.client\n", "http.client"),
    ("ftplib.FTP()", "import ftplib\n", "ftplib"),
    ("smtplib.SMTP()", "import smtplib\n", "smtplib"),
    ("requests.get('http://x')", "import requests\n", "requests"),
    ("httpx.get('http://x')", "import httpx\n", "httpx"),
    ("aiohttp.ClientSession", "import aiohttp\n", "aiohttp"),
    ("builtins.eval('1')", "import builtins\n", "eval"),
    ("__builtins__['eval']('1')", "", "__builtins__"),
    ("(1).__class__.__base__.__subclasses__()", "", "introspection (__subclasses__)"),
    ("sys.modules['os']", "import sys\n", "sys.modules"),
]


@pytest.mark.parametrize(("statement", "imports", "capability"), FORBIDDEN, ids=[f[2] + ":" + f[0] for f in FORBIDDEN])
def test_a_forbidden_capability_fails_unless_the_original_has_it(statement: str, imports: str, capability: str) -> None:
    error = gate_error(generated(statement, top=imports))
    assert error.check == "capability"
    assert capability in error.description and "the original does not" in error.description
    # The same capability in the original: allowed (the generated code contains the original).
    original = imports + ORIGINAL + f"\n\ndef helper():\n    {statement}\n"
    check_generated(original, generated(statement, original=original), "area")


def test_stub_imports_do_not_hide_a_capability_the_original_lacks() -> None:
    # The original imports requests (allowed), the generated code adds socket: still refused.
    original = "import requests\n\n" + ORIGINAL
    error = gate_error(generated("socket.socket()", original=original, top="import socket\n"), original)
    assert error.check == "capability" and "socket" in error.description and "requests" not in error.description


def test_module_aliases_passed_around_are_a_capability() -> None:
    error = gate_error(generated("o = os\n    o.system('true')", top="import os\n"))
    assert error.check == "capability" and "os module used as a value" in error.description
    error = gate_error(generated("f = getattr(os, name)", top="import os\nname = 'system'\n"))
    assert "dynamic attribute of os" in error.description


def test_harmless_uses_of_os_and_friends_pass() -> None:
    extra = "x = os.path.join('a', 'b') + os.environ.get('HOME', '') + str(sys.version_info) + re.compile('a').pattern"
    check_generated(ORIGINAL, generated(extra, top="import os\nimport re\nimport sys\n"), "area")


# --- bandit --------------------------------------------------------------------------


def test_a_new_high_bandit_finding_fails() -> None:
    error = gate_error(generated("hashlib.md5(b'x').hexdigest()", top="import hashlib\n"))
    assert error.check == "bandit" and "B324" in error.description


def test_a_high_finding_the_original_has_passes() -> None:
    original = "import hashlib\n\n" + ORIGINAL + "\n\ndef digest(b):\n    return hashlib.md5(b).hexdigest()\n"
    check_generated(original, generated("hashlib.md5(b'x').hexdigest()", original=original), "area")


def test_nosec_does_not_hide_a_finding() -> None:
    error = gate_error(generated("hashlib.md5(b'x').hexdigest()  # nosec", top="import hashlib\n"))
    assert error.check == "bandit" and "B324" in error.description


def test_medium_findings_pass() -> None:
    # B506 (yaml.load without a Loader) is medium severity: not the gate's business.
    check_generated(ORIGINAL, generated("yaml.load('a: 1')", top="import yaml\n"), "area")


def test_a_high_finding_in_a_capability_the_original_has_still_fails() -> None:
    original = "import subprocess\n\n" + ORIGINAL + "\n\ndef run():\n    return subprocess.run(['true'])\n"
    code = generated("subprocess.Popen(str(r), shell=True)", original=original)
    error = gate_error(code, original)
    assert error.check == "bandit" and "B602" in error.description


# --- the emitter's exemption ----------------------------------------------------------


def _with_emitter(block: str, after: str = "") -> str:
    """A good module: the original, a POET-like state block, the emitter block, the wrapper."""
    state = (
        "\n\nimport threading as _poet_threading\nimport time as _poet_time\n"
        '_POET_FUNCTION = "area"\n_POET_VERSION = ""\n_POET_PARAMS = {}\n_POET_METRICS = {}\n'
        "_poet_metrics_lock = _poet_threading.Lock()\n\n\n"
    )
    return ORIGINAL + state + block + "\n" + after + WRAPPER.format(extra="_poet_emit('x', {})")


def test_the_canonical_emitter_passes(gen) -> None:
    check_generated(ORIGINAL, _with_emitter(_emitter.CANONICAL), "area")
    code = gen(ORIGINAL, "area").python
    assert _emitter.CANONICAL in code
    check_generated(ORIGINAL, code, "area")


@pytest.mark.parametrize(
    "tamper",
    [
        lambda s: s.replace('"/api/v1/events:publish"', '"/steal"'),  # one string changed
        lambda s: s.replace("    import json\n", "    import json  # harmless comment\n"),  # a comment only
        lambda s: s + "\n\nx = 1",  # text appended inside the same statement list: still canonical prefix
        lambda s: "    " + s.replace("\n", "\n    ").replace("\n    \n", "\n\n"),  # indented into a block
    ],
    ids=["string", "comment", "appended", "indented"],
)
def test_a_tampered_emitter_gets_no_exemption(tamper) -> None:
    block = tamper(_emitter.CANONICAL)
    if block.startswith("    "):
        block = "if True:\n" + block
    generated = _with_emitter(block)
    if block.endswith("x = 1"):  # the canonical block intact, then other code: exempt, and x = 1 is fine
        check_generated(ORIGINAL, generated, "area")
        return
    error = gate_error(generated)
    assert error.check == "capability" and "urllib" in error.description


def test_the_emitter_text_elsewhere_gets_no_exemption() -> None:
    # The canonical text inside a string literal is not code: the real network code after it is scanned.
    generated = _with_emitter(
        "_TEXT = '''\n" + _emitter.CANONICAL.replace("'''", "") + "\n'''",
        after="import urllib.request\n",
    )
    error = gate_error(generated)
    assert error.check == "capability" and "urllib" in error.description


@pytest.mark.parametrize(
    "after",
    [
        "def _poet_events_url():\n    return 'http://evil.example'\n",
        "_poet_ev_send = print\n",
        "import json as _poet_os\n",
        "def area_helper():\n    _poet_ev_send([{'x': 1}])\n",
        "x = globals()['_poet_ev_send']\n",
    ],
    ids=["redefine-url", "rebind-sender", "rebind-alias", "call-internal", "string-lookup"],
)
def test_code_outside_the_emitter_cannot_rebind_or_reach_into_it(after: str) -> None:
    error = gate_error(_with_emitter(_emitter.CANONICAL, after=after))
    assert error.check == "capability" and "event emitter" in error.description


def test_code_outside_the_emitter_cannot_use_its_imports_unseen() -> None:
    error = gate_error(_with_emitter(_emitter.CANONICAL, after="_poet_os.system('true')\n"))
    assert error.check == "capability" and "os.system" in error.description


def test_code_outside_the_emitter_may_use_its_interface() -> None:
    after = "import os as _poet_os\n\n\ndef _poet_domain_event():\n    _poet_emit('drift.detected', {'score': 1})\n"
    check_generated(ORIGINAL, _with_emitter(_emitter.CANONICAL, after=after), "area")


# --- what bandit skips to save time -----------------------------------------------------


def test_bandit_still_sees_new_code_using_the_originals_imports() -> None:
    # The original's own statements are skipped (their findings are allowed anyway), but
    # its imports are kept, so bandit still resolves `sp` in the new code.
    original = "import subprocess as sp\n\n" + ORIGINAL + "\n\ndef run():\n    return sp.run(['true'])\n"
    error = gate_error(generated("sp.Popen(str(r), shell=True)", original=original), original)
    assert error.check == "bandit" and "B602" in error.description


def test_the_gate_fails_closed_when_bandit_breaks() -> None:
    from poet_grpc.generator import GateSandbox

    broken = "def scan(args):\n    raise RuntimeError('boom')\n\n\nJOBS = {'gate.bandit': scan}\n"
    sandbox = GateSandbox(workers=1, jobs=[broken]).start()
    try:
        with pytest.raises(GateError) as caught:
            check_generated(ORIGINAL, generated("x = 1"), "area", sandbox=sandbox)
    finally:
        sandbox.close()
    assert caught.value.check == "bandit" and "RuntimeError: boom" in caught.value.description

def test_the_statements_bandit_skips_cannot_hold_what_its_high_severity_tests_look_at() -> None:
    """The gate leaves out of bandit's scan statements without a call, import or
    function definition (see BANDIT_HIGH_NODES); that is sound only while every
    bandit test that can report HIGH severity looks at those nodes alone."""
    import ast
    from pathlib import Path

    from bandit.core import extension_loader

    from poet_grpc.generator import _gate

    job: dict = {}
    exec(Path(_gate.__file__).with_name("_gate_bandit_job.py").read_text(), job)  # noqa: S102 - our own job code
    job["warm"]()
    high = job["_tests_that_can_find_high"]()
    assert high and "B602" in high and "B324" in high and "B613" not in high
    names = {node.__name__ for node in _gate.BANDIT_HIGH_NODES}
    manager = extension_loader.MANAGER
    for plugin in manager.plugins:
        if plugin.plugin._test_id in high:
            assert set(plugin.plugin._checks) <= names, (plugin.name, plugin.plugin._checks)
    blacklisted = {node for node, tests in manager.blacklist.items() if any(t["id"] in high for t in tests)}
    assert blacklisted <= names
    assert all(isinstance(getattr(ast, name), type) for name in names)
