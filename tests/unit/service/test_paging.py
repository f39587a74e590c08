import pytest

from poet_grpc.core.errors import InvalidArgument
from poet_grpc.core.paging import decode_token, encode_token, page_size


def test_token_round_trip_is_bound_to_filters():
    token = encode_token(42, ["f", "drift.detected"])
    assert decode_token(token, ["f", "drift.detected"]) == 42
    assert "42" not in token  # opaque, not a bare position
    with pytest.raises(InvalidArgument) as failure:
        decode_token(token, ["g", "drift.detected"])
    assert failure.value.violations[0].field == "page_token"


@pytest.mark.parametrize("token", ["!!!", "bm90IGpzb24", "eyJhIjogLTEsICJmIjogIngifQ", "eyJhIjogIjEiLCAiZiI6ICJ4In0"])
def test_garbage_tokens_are_invalid(token):
    with pytest.raises(InvalidArgument):
        decode_token(token, [])


def test_page_size_defaults_and_caps():
    assert page_size(0, default=50, maximum=500) == 50
    assert page_size(10_000, default=50, maximum=500) == 500
    with pytest.raises(InvalidArgument):
        page_size(-1, default=50, maximum=500)
