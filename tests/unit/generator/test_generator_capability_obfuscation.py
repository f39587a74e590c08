"""The capability scan against obfuscated routes to a forbidden capability.

Each case is refused when the original lacks the capability and allowed when the
original uses the same code (hence the same capability), as for the plain routes in
test_generator_gate_security.py. The rules (see poet_grpc.generator._capabilities):

- An attribute named like a sensitive module (os, sys, builtins, subprocess,
  importlib, socket, ctypes, pickle, marshal, ..., also as `_os`, `_sys`) is taken to
  be that module whatever it is read from: `shutil.os.system`, `tempfile._os.system`
  and `record.os.system` are os.system. Harmless uses stay harmless
  (`record.os.upper()`), and `record.os` alone passes when `record` is not a module;
  read from a module (`shutil.os`) and used as a value, it is the module used as a value.
- getattr(x, "name") is x.name, also when the name is assembled from string pieces;
  getattr(x, <computed>) is a capability when x is a module (any module: most of them
  expose os or sys) or reached through one, not when x is an ordinary object.
- Namespaces: globals(), locals(), vars() of a module or without argument, a module's
  __dict__, operator.attrgetter/methodcaller with forbidden or computed names, string
  keys naming code builtins, forbidden names built from pieces ('ex' + 'ec').
- Whole modules: importlib (and pkgutil, zipimport), ctypes, pickle / marshal / shelve
  ("deserialization"), code / codeop, runpy, multiprocessing, asyncio.subprocess;
  os.fork*; frames (sys._getframe, inspect.currentframe / stack, gi_frame, f_back,
  tb_frame, ...).
"""

from __future__ import annotations

import pytest

from poet_grpc.generator import check_generated
from unit.generator.gate_support import ORIGINAL, gate_error, generated



# (statement added to the enhanced function, module-level imports it needs, capability named)
OBFUSCATED = [
    # os reached through another module's attribute
    ("shutil.os.system('true')", "import shutil\n", "os.system"),
    ("posixpath.os.system('true')", "import posixpath\n", "os.system"),
    ("logging.os.popen('true')", "import logging\n", "os.popen"),
    ("platform.os.system('true')", "import platform\n", "os.system"),
    ("tempfile._os.system('true')", "import tempfile\n", "os.system"),
    ("os.path.os.execv('/bin/true', ['true'])", "import os\n", "os.exec*"),
    ("r.os.spawnl(0, '/bin/true', 'true')", "", "os.spawn*"),
    ("os.system('true')", "from shutil import os\n", "os.system"),
    ("o = shutil.os\n    o.system('true')", "import shutil\n", "os module used as a value"),
    ("getattr(shutil, 'o' + 's').system('true')", "import shutil\n", "os.system"),
    ("logging.subprocess.run(['true'])", "import logging\n", "subprocess"),
    ("logging.sys.modules['os']", "import logging\n", "sys.modules"),
    ("tempfile._sys.modules['os']", "import tempfile\n", "sys.modules"),
    ("logging.builtins.exec('x = 1')", "import logging\n", "exec"),
    ("r.importlib.util.find_spec('os')", "", "importlib"),
    # builtins and modules fetched by computed names
    ("globals()['__buil' + 'tins__']['ex' + 'ec']('x = 1')", "", "globals"),
    ("locals()['r']", "", "locals"),
    ("vars(shutil)['os'].system('true')", "import shutil\n", "vars"),
    ("vars(builtins)['exec']('x = 1')", "import builtins\n", "vars"),
    ("shutil.__dict__['os'].system('true')", "import shutil\n", "__dict__"),
    ("getattr(shutil, name)", "import shutil\nname = 'os'\n", "dynamic attribute of shutil"),
    ("getattr(logging.os, name)", "import logging\nname = 'popen'\n", "dynamic attribute of os"),
    ("getattr(builtins, 'ex' + 'ec')('x = 1')", "import builtins\n", "exec"),
    ("getattr(asyncio.subprocess, 'create_subprocess_' + 'shell')", "import asyncio\n", "subprocess"),
    ("operator.attrgetter('os.system')(shutil)('true')", "import operator\nimport shutil\n", "os.system"),
    ("operator.methodcaller('system', 'true')(r)", "import operator\n", "os.system"),
    ("operator.attrgetter(name)(r)", "import operator\nname = 'x'\n", "operator.attrgetter"),
    ("table = {}\n    table['ex' 'ec']", "", "exec"),
    ("name = f'{\"ev\"}al'", "", "computed name 'eval'"),
    # import machinery, native code, deserialization, other code runners, processes
    ("importlib.util.spec_from_file_location('m', '/tmp/m.py')", "import importlib.util\n", "importlib"),
    ("importlib.machinery.SourceFileLoader('m', '/tmp/m.py')", "import importlib.machinery\n", "importlib"),
    ("pkgutil.resolve_name('os:system')", "import pkgutil\n", "importlib"),
    ("ctypes.CDLL(None)", "import ctypes\n", "ctypes"),
    ("pickle.loads(b'')", "import pickle\n", "deserialization"),
    ("marshal.loads(b'')", "import marshal\n", "deserialization"),
    ("shelve.open('/tmp/poet-shelf')", "import shelve\n", "deserialization"),
    ("code.InteractiveInterpreter().runsource('1')", "import code\n", "code module"),
    ("runpy.run_path('/tmp/m.py')", "import runpy\n", "runpy"),
    ("multiprocessing.Process(target=print)", "import multiprocessing\n", "multiprocessing"),
    ("os.fork()", "import os\n", "os.fork"),
    # asyncio subprocesses
    ("asyncio.subprocess.PIPE", "import asyncio\n", "subprocess"),
    ("from asyncio import subprocess as asp", "", "subprocess"),
    ("asyncio.get_event_loop().subprocess_shell(None, 'true')", "import asyncio\n", "subprocess"),
    # class-hierarchy and frame walks
    ("().__class__.__mro__[-1].__subclasses__()", "", "__subclasses__"),
    ("getattr(().__class__.__mro__[-1], '__subcl' + 'asses__')()", "", "__subclasses__"),
    ("sys._getframe(1)", "import sys\n", "_getframe"),
    ("inspect.currentframe()", "import inspect\n", "currentframe"),
    ("inspect.stack()", "import inspect\n", "inspect.stack"),
    ("(lambda: (yield))().gi_frame.f_back", "", "gi_frame"),
    ("r.__traceback__.tb_frame", "", "tb_frame"),
    ("gc.get_referrers(r)", "import gc\n", "gc"),
]


@pytest.mark.parametrize(("statement", "imports", "capability"), OBFUSCATED, ids=[f[0] for f in OBFUSCATED])
def test_an_obfuscation_fails_unless_the_original_has_it(statement: str, imports: str, capability: str) -> None:
    error = gate_error(generated(statement, top=imports))
    assert error.check == "capability"
    assert capability in error.description and "the original does not" in error.description
    # The same code in the original: the same capability, allowed.
    original = imports + ORIGINAL + f"\n\ndef helper(r):\n    {statement}\n"
    check_generated(original, generated(statement, original=original), "area")


# Code that looks like the above but reaches no capability: passes.
ORDINARY = [
    ("name = 'real'\n    x = getattr(r, name)", ""),
    ("x = getattr(r, 'real', None)", ""),
    ("os_name = 'linux'\n    x = os_name.upper()", ""),
    ("info = types.SimpleNamespace(os='linux')\n    x = info.os.upper() + info.os", "import types\n"),
    ("x = vars(types.SimpleNamespace(a=1))", "import types\n"),
    ("x = type(r).__mro__ + r.__class__.__bases__", ""),
    ("x = types.SimpleNamespace(a=1).__dict__", "import types\n"),
    ("x = platform.system() + os.sep", "import os\nimport platform\n"),
    ("x = {'role': 'system', 'mode': 'eval'}['role']", ""),
    ("x = 'exec' + 'ution time'", ""),
    ("x = math.pi + getattr(math, 'tau')", "import math\n"),
    ("x = operator.attrgetter('real')(r)", "import operator\n"),
    ("x = types.SimpleNamespace(eval=len, execute=len).eval('ab') + r.system", "import types\n"),
]


@pytest.mark.parametrize(("statement", "imports"), ORDINARY, ids=[f[0] for f in ORDINARY])
def test_ordinary_code_passes(statement: str, imports: str) -> None:
    check_generated(ORIGINAL, generated(statement, top=imports), "area")


def test_a_capability_the_original_has_does_not_allow_another() -> None:
    # The original reaches os.system through shutil; the generated code adds pickle: refused.
    original = "import shutil\n\n" + ORIGINAL + "\n\ndef helper():\n    shutil.os.system('true')\n"
    error = gate_error(generated("pickle.loads(b'')", original=original, top="import pickle\n"), original)
    assert error.check == "capability" and "deserialization" in error.description
    assert "os.system" not in error.description
