"""The per-client token bucket, the client key, and the RateLimited -> RESOURCE_EXHAUSTED mapping."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2

from poet_grpc.core.errors import RateLimited, Unavailable
from poet_grpc.api.errors import to_rpc_status
from poet_grpc.api.interceptors.rate_limit import TokenBuckets, client_key


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_grants_its_burst_then_its_rate() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=2, burst=3, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0, 0, 0]
    assert buckets.take("a") == pytest.approx(0.5)  # one token comes back every 0.5 s
    clock.now += 0.25
    assert buckets.take("a") == pytest.approx(0.25)
    clock.now += 0.25
    assert buckets.take("a") == 0
    clock.now += 60  # refills, but never beyond the burst
    assert [buckets.take("a") for _ in range(4)][-1] > 0


def test_clients_have_their_own_buckets_and_the_oldest_is_dropped() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=1, burst=1, max_keys=2, clock=clock)
    assert buckets.take("a") == 0 and buckets.take("a") > 0
    assert buckets.take("b") == 0
    assert buckets.take("c") == 0
    assert len(buckets) == 2  # "a" was least recently used: gone, and back full
    assert buckets.take("a") == 0


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 5), (1, 0)])
def test_bucket_parameters_are_checked(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        TokenBuckets(rate=rate, burst=burst)


@pytest.mark.parametrize(
    ("metadata", "peer", "key"),
    [
        ((("x-client-id", " agent-7 "),), "ipv4:10.0.0.1:5000", "id:agent-7"),
        ((("x-forwarded-for", "203.0.113.9, 10.1.1.1"),), "ipv4:127.0.0.1:5000", "ip:10.1.1.1"),
        ((("x-forwarded-for", "203.0.113.9"), ("x-client-id", "c")), "ipv4:127.0.0.1:1", "id:c"),
        ((), "ipv4:10.0.0.1:5000", "peer:ipv4:10.0.0.1"),
        ((), "ipv6:[::1]:5000", "peer:ipv6:[::1]"),
        ((("x-client-id", ""),), "unix:/tmp/s", "peer:unix:/tmp/s"),
        ((("x-client-id", "x" * 500),), "ipv4:1.2.3.4:1", "id:" + "x" * 128),
    ],
)
def test_client_key(metadata, peer: str, key: str) -> None:
    assert client_key(metadata, peer) == key


def _status(status: grpc.Status) -> status_pb2.Status:
    (binary,) = [v for k, v in status.trailing_metadata if k == "grpc-status-details-bin"]
    return status_pb2.Status.FromString(binary)


def test_rate_limited_is_resource_exhausted_with_retry_info_and_retry_after() -> None:
    status = to_rpc_status(RateLimited("slow down", retry_after=1.2, metadata={"burst": "2"}))
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert ("retry-after", "2") in status.trailing_metadata
    rich = _status(status)
    assert rich.code == code_pb2.RESOURCE_EXHAUSTED
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    assert rich.details[0].Unpack(info) and info.reason == "RATE_LIMITED" and info.metadata["burst"] == "2"
    assert rich.details[1].Unpack(retry) and retry.retry_delay.ToMilliseconds() == 1200


def test_unavailable_also_carries_retry_after() -> None:
    status = to_rpc_status(Unavailable("busy", retry_after=0.1))
    assert status.code == grpc.StatusCode.UNAVAILABLE
    assert ("retry-after", "1") in status.trailing_metadata
