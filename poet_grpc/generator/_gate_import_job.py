"""The gate's import check, run in the sandbox (see poet_grpc.sandbox): the
original and the generated module are imported, one after the other, and their
run-time signatures compared.

This file is not imported by the server: its text is loaded by every sandbox
worker (standard library only), warmed once, and each check runs in a fresh
process forked from the worker. The verdict comes from a process that ran the
code it judges, so it is a correctness check, not a security boundary: the
sandbox is that.
"""

import __future__
import importlib.util
import inspect
import re
import sys
import traceback

MESSAGE_TEXT = 200
"""An exception's text is cut to this many characters: an error carries its type
and a short text, never a dump of what the code could read."""


class _StubLoader:
    def __init__(self, stubbed):
        self.stubbed = stubbed

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        module.__path__ = []
        self.stubbed.append(module.__name__)

        def __getattr__(attribute):
            if attribute.startswith("__"):
                raise AttributeError(attribute)
            from unittest import mock

            # One object per name: both imports of the module see the same sentinel.
            value = mock.MagicMock(name=module.__name__ + "." + attribute)
            setattr(module, attribute, value)
            return value

        module.__getattr__ = __getattr__


class _StubFinder:
    """Last resort for the original's own imports that no real finder resolves."""

    def __init__(self, roots, stubbed):
        self.roots = roots
        self.stubbed = stubbed

    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] in self.roots:
            return importlib.util.spec_from_loader(fullname, _StubLoader(self.stubbed), is_package=True)
        return None


class _Rejected(Exception):
    def __init__(self, check, description):
        super().__init__(check, description)
        self.check = check
        self.description = description


def _short(error):
    return "%s: %s" % (type(error).__name__, str(error)[:MESSAGE_TEXT])


def _explain(error, path):
    where = ""
    for frame in traceback.extract_tb(error.__traceback__):
        if frame.filename == path:
            where = " (line %d)" % frame.lineno
    return _short(error) + where


def _load(path, source, module_name, codes=None, package=False):
    """Import source as module_name from a file at path (written here, so that
    tracebacks and inspect find it), compiling it unless its code objects are given.
    `package`: the module is a package's __init__ (its relative imports start there)."""
    with open(path, "w", encoding="utf-8") as out:
        out.write(source)
    spec = importlib.util.spec_from_file_location(
        module_name, path, submodule_search_locations=[] if package else None
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    namespace = module.__dict__
    for index, code in enumerate(codes or [compile(source, path, "exec", dont_inherit=True)]):
        doc = namespace.get("__doc__")
        exec(code, namespace)  # nosec B102 - in the sandbox
        if index:
            namespace["__doc__"] = doc  # a later chunk's leading string is no module docstring
    return module


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+|id='[0-9]+'")


def _same(a, b):
    """Do two values a signature shows mean the same? The same object, equal, or (loaded
    twice, from two imports of one module) the same text, addresses masked."""
    if a is b:
        return True
    try:
        if type(a) is type(b) and a == b:
            return True
    except Exception:
        pass
    try:
        return _ADDRESS.sub("?", repr(a)) == _ADDRESS.sub("?", repr(b))
    except Exception:
        return False


def _signature_difference(original, enhanced):
    """"" when the two signatures say the same (parameter names, kinds, defaults,
    annotations), else what differs. Either may have no signature: then both must not."""
    try:
        want = inspect.signature(original, follow_wrapped=False)
    except (TypeError, ValueError) as error:
        want = error
    try:
        got = inspect.signature(enhanced, follow_wrapped=False)
    except (TypeError, ValueError) as error:
        if isinstance(want, Exception):
            return ""
        return "no signature at run time: " + _short(error)
    if isinstance(want, Exception):
        return "the original has no signature at run time, the generated function has %s" % _text(got)
    if len(want.parameters) != len(got.parameters) or not _same(want.return_annotation, got.return_annotation):
        return "at run time the signature is %s, the original's is %s" % (_text(got), _text(want))
    for a, b in zip(want.parameters.values(), got.parameters.values()):
        if a.name != b.name or a.kind != b.kind or not _same(a.default, b.default) or not _same(a.annotation, b.annotation):
            return "at run time the signature is %s, the original's is %s" % (_text(got), _text(want))
    return ""


def _text(signature):
    try:
        return _ADDRESS.sub("?", str(signature))[:280]
    except Exception:
        return "(unprintable)"


def import_check(args):
    """{"original", "generated" (or its "chunks"), "name", "stub_roots"} -> {"ok": True} or
    {"ok": False, "check", "description"} (check: compile, import, function, signature)."""
    stubbed = []
    try:
        _import_check(args, stubbed)
    except _Rejected as rejected:
        return {"ok": False, "check": rejected.check, "description": rejected.description, "stubbed": stubbed}
    return {"ok": True, "stubbed": sorted(set(stubbed))}


def _compile_error(error):
    where = "line %s: " % error.lineno if isinstance(error, SyntaxError) and error.lineno else ""
    return _Rejected("compile", where + _short(error))


_COMPILE_ERRORS = (SyntaxError, ValueError, RecursionError, MemoryError)
_FUTURE_FLAGS = 0
for _feature in __future__.all_feature_names:
    _FUTURE_FLAGS |= getattr(__future__, _feature).compiler_flag
_LATE_FUTURE = re.compile(r"^[ \t]*from[ \t]+__future__[ \t]+import", re.MULTILINE)


def _compiled(source, chunks, path):
    """The generated module's code, as one code object or (from the template's
    chunks of whole top-level statements, see the gate's _Layout) one per chunk,
    the fixed chunks precompiled by warm(). Both run the same statements in the
    same order; only the line numbers inside the fixed chunks differ."""
    if not chunks or any(_LATE_FUTURE.search(c) for c in chunks[1:]):
        return [compile(source, path, "exec", dont_inherit=True)]
    first = compile(chunks[0], path, "exec", dont_inherit=True)
    flags = first.co_flags & _FUTURE_FLAGS  # the original's __future__ imports hold for the whole module
    codes, line = [first], chunks[0].count("\n")
    for chunk in chunks[1:]:
        code = None if flags else _PRECOMPILED.get(chunk.strip("\n"))
        if code is None:
            code = compile("\n" * line + chunk, path, "exec", flags=flags, dont_inherit=True)
        codes.append(code)
        line += chunk.count("\n")
    return codes


def _import_check(args, stubbed):
    name = args["name"]
    generated_path = "poet_gate_generated.py"
    chunks = args.get("chunks")
    source = "".join(chunks) if chunks else args["generated"]
    try:
        code = _compiled(source, chunks, generated_path)
    except _COMPILE_ERRORS as error:
        raise _compile_error(error) from None
    module_name, package = _module_name(args.get("module") or "")
    if args["stub_roots"]:
        sys.meta_path.append(_StubFinder(set(args["stub_roots"]), stubbed))
    try:
        reference = _load("poet_gate_original.py", args["original"], module_name, package=package)
    except BaseException as error:
        raise _Rejected("import", "the original module fails at import: " + _explain(error, "poet_gate_original.py"))
    del sys.modules[module_name]  # the stub modules stay: both imports share their objects
    try:
        generated = _load(generated_path, source, module_name, code, package=package)
    except BaseException as error:
        raise _Rejected("import", "the generated module fails at import: " + _explain(error, generated_path))
    original = getattr(reference, name, None)
    enhanced = getattr(generated, name, None)
    if callable(original) and not callable(enhanced):
        raise _Rejected("function", "the generated module binds no callable %r" % name)
    if type(original) is not type(enhanced):
        raise _Rejected("function", "%s is a %s in the generated module, a %s in the original" % (
            name, type(enhanced).__name__, type(original).__name__))
    difference = _signature_difference(original, enhanced)
    if difference:
        raise _Rejected("signature", difference[:600])
    for kind in (inspect.iscoroutinefunction, inspect.isgeneratorfunction, inspect.isasyncgenfunction):
        if kind(original) != kind(enhanced):
            raise _Rejected("signature", "the generated function is not the original's kind at run time (%s)"
                            % kind.__name__[2:])


def _module_name(module):
    """(the name to import the code as, whether it is a package's __init__)."""
    if not module:
        return "poet_gate_module", False
    if module.endswith(".__init__"):
        return module[: -len(".__init__")], True
    return module, False


PRELOADED = (
    "asyncio", "atexit", "bisect", "collections", "collections.abc", "contextvars", "dataclasses", "decimal",
    "enum", "fractions", "functools", "hashlib", "json", "math", "numbers", "random", "re", "resource",
    "statistics", "string", "threading", "time", "typing", "unittest.mock", "urllib.request",
)
"""Modules POET's generated code (and most originals) import: loaded once per
worker, so that a task's import does not load them again."""


FIXED_CHUNKS = ()
"""The template's fixed chunks (exact text); the gate appends their value to this source."""

_PRECOMPILED = {}


def warm():
    """Load the common modules and compile the fixed chunks once per worker; each
    forked check reuses them."""
    for name in PRELOADED:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    for text in FIXED_CHUNKS:
        _PRECOMPILED[text] = compile(text + "\n", "poet_gate_generated.py", "exec", dont_inherit=True)


JOBS = {"gate.import": import_check}
