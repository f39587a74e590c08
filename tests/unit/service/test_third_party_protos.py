"""third_party/ makes the contract self-contained: with proto/ it holds every
non-well-known import, and the google.rpc error types clients need to decode
error details, each an unchanged copy of googleapis-common-protos."""

from __future__ import annotations

import re
from pathlib import Path

import google.api

ROOT = Path(__file__).resolve().parents[3]
THIRD_PARTY = ROOT / "third_party"
SITE = Path(google.api.__path__[0]).parent.parent  # where googleapis-common-protos keeps its .proto files
IMPORT = re.compile(r'^import\s+(?:public\s+|weak\s+)?"([^"]+)";', re.M)


def test_copies_are_unchanged_and_include_the_error_types() -> None:
    copies = {str(p.relative_to(THIRD_PARTY)) for p in THIRD_PARTY.rglob("*.proto")}
    assert {"google/rpc/status.proto", "google/rpc/error_details.proto"} <= copies
    for name in sorted(copies):
        assert (THIRD_PARTY / name).read_bytes() == (SITE / name).read_bytes(), f"third_party/{name} differs"


def test_every_import_resolves_in_the_repository() -> None:
    roots = (ROOT / "proto", THIRD_PARTY)
    for proto in (p for root in roots for p in root.rglob("*.proto")):
        for name in IMPORT.findall(proto.read_text()):
            if name.startswith("google/protobuf/"):
                continue  # well-known types ship with every protobuf runtime
            assert any((root / name).exists() for root in roots), f"{proto.relative_to(ROOT)} imports {name}"
