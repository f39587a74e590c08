"""Page tokens are opaque, bound to their filters, signed with the database's key
and fully checked: a forged, edited or truncated token is INVALID_PAGE_TOKEN,
never a position handed to SQLite."""

from __future__ import annotations

import base64
import json
import secrets

import pytest

from poet_grpc.core import paging
from poet_grpc.core.errors import InvalidArgument
from poet_grpc.core.paging import PageTokens, page_size

FILTERS = ["calc", "drift.*"]
TOKENS = PageTokens(secrets.token_bytes(32))


def _unsigned(after) -> str:
    raw = json.dumps({"a": after, "f": paging._digest(FILTERS)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _reason(token: str, tokens: PageTokens = TOKENS) -> str:
    with pytest.raises(InvalidArgument) as failure:
        tokens.decode(token, FILTERS)
    assert [v.field for v in failure.value.violations] == ["page_token"]
    return failure.value.reason


def test_a_token_round_trips_bound_to_its_filters():
    token = TOKENS.encode(42, FILTERS)
    assert TOKENS.decode(token, FILTERS) == 42
    assert TOKENS.decode("", FILTERS) == 0
    with pytest.raises(InvalidArgument) as failure:
        TOKENS.decode(token, ["other", "drift.*"])
    assert "different filters" in failure.value.violations[0].description


@pytest.mark.parametrize("token", ["!!!", "bm90IGpzb24", "eyJhIjogLTEsICJmIjogIngifQ"])
def test_garbage_tokens_are_refused(token):
    assert _reason(token) == "INVALID_PAGE_TOKEN"


@pytest.mark.parametrize("after", [2**63, 2**64, 7, 0, -1, True, 1.5, "3"])
def test_unsigned_tokens_are_refused(after):
    assert _reason(_unsigned(after)) == "INVALID_PAGE_TOKEN"


def test_a_signed_token_out_of_sqlites_range_is_refused():
    assert TOKENS.decode(TOKENS.encode(2**63 - 1, FILTERS), FILTERS) == 2**63 - 1
    assert _reason(TOKENS.encode(2**63, FILTERS)) == "INVALID_PAGE_TOKEN"
    assert _reason(TOKENS.encode(-1, FILTERS)) == "INVALID_PAGE_TOKEN"


def test_edited_and_truncated_tokens_are_refused():
    token = TOKENS.encode(42, FILTERS)
    blob = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    for i in range(len(blob)):
        edited = bytearray(blob)
        edited[i] ^= 0x01
        assert _reason(base64.urlsafe_b64encode(bytes(edited)).decode()) == "INVALID_PAGE_TOKEN"
    for cut in range(1, len(token)):
        assert _reason(token[:cut]) == "INVALID_PAGE_TOKEN"
    assert _reason(token + "AAAA") == "INVALID_PAGE_TOKEN"
    assert _reason("A" * (paging.MAX_TOKEN_CHARS + 1)) == "INVALID_PAGE_TOKEN"


def test_a_token_of_another_database_is_refused():
    key = secrets.token_bytes(32)
    token = PageTokens(key).encode(42, FILTERS)
    assert _reason(token) == "INVALID_PAGE_TOKEN"
    assert PageTokens(key).decode(token, FILTERS) == 42  # the same database after a restart


def test_page_size_defaults_and_caps():
    assert page_size(0, default=50, maximum=500) == 50
    assert page_size(10_000, default=50, maximum=500) == 500
    with pytest.raises(InvalidArgument):
        page_size(-1, default=50, maximum=500)
