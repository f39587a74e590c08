"""security: path traversal and NUL bytes in path parameters, input length, value-free errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from poet_grpc.generator import check_generated
from unit.generator.domain_support import code_of, enhanced

DOMAIN = "security"

READ = '''
def resolve(base_dir, file_name: str, *parts, mode: str = "r") -> str:
    return "/".join([str(base_dir), str(file_name), *parts]) + ":" + mode
'''


@pytest.fixture
def read(load):
    return enhanced(load, READ, "resolve", DOMAIN)


def test_valid_paths_pass_unchanged(read, load) -> None:
    for args in (("data", "a.txt"), ("data", "final..txt"), ("/srv/data", "b.csv"), (Path("x"), "c")):
        assert read.resolve(*args) == load(READ).resolve(*args)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("data", "../etc/passwd"), "argument 'file_name' must not contain a '..' path segment"),
        (("data/..", "a"), "argument 'base_dir' must not contain a '..' path segment"),
        (("data", "a\\..\\b"), "'..' path segment"),
        (("data", "a\x00.txt"), "argument 'file_name' must not contain a NUL byte"),
        ((Path("a/../b"), "c"), "'base_dir'"),
    ],
)
def test_traversal_and_nul_bytes_are_rejected_without_the_value(read, args, message) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.")) as caught:
        read.resolve(*args)
    assert "passwd" not in str(caught.value) and "\x00" not in str(caught.value)


def test_absolute_paths_only_when_asked(load) -> None:
    module = enhanced(load, READ, "resolve", DOMAIN, reject_absolute_paths=True)
    for base in ("/etc", "\\\\server\\share", "C:\\Windows", "~root"):
        with pytest.raises(ValueError, match="'base_dir' must be a relative path"):
            module.resolve(base, "a")
    assert module.resolve("data", "a") == "data/a:r"


def test_inputs_longer_than_max_input_chars_are_rejected(load) -> None:
    module = enhanced(load, READ, "resolve", DOMAIN, max_input_chars=10)
    assert module.resolve("d", "f", "0123456789") == "d/f/0123456789:r"
    with pytest.raises(ValueError, match=r"argument '\*parts\[1\]' is longer than 10 characters") as caught:
        module.resolve("d", "f", "ok", "x" * 11)
    assert "xxxx" not in str(caught.value)
    with pytest.raises(ValueError, match="argument 'mode' is longer"):
        module.resolve("d", "f", mode="r" * 11)


def test_calls_are_audited(read) -> None:
    read.resolve("data", "a.txt")
    assert [e["outcome"] for e in read.resolve.poet_audit] == ["success"]


def test_non_matching_functions_get_only_the_length_check_and_audit(load) -> None:
    source = "def add(a: int, b: int) -> int:\n    return a + b\n"
    code = code_of(source, "add", DOMAIN)
    assert "path_traversal_guard" not in code.optimizations and "_poet_check_path(" not in code.python
    assert enhanced(load, source, "add", DOMAIN).add(2, 3) == 5


def test_generated_module_passes_the_gate() -> None:
    check_generated(READ, code_of(READ, "resolve", DOMAIN).python, "resolve")
