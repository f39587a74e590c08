"""FairShare: no caller holds more than its share of the generator's slots, and
waiters are served in arrival order among those allowed to go."""

from __future__ import annotations

import asyncio

import pytest

from poet_grpc.core.fair_share import FairShare


async def _hold(share: FairShare, caller: str, release: asyncio.Event, log: list[str]) -> None:
    async with share.slot(caller):
        log.append(caller)
        await release.wait()


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_one_caller_holds_at_most_half_and_another_still_gets_in() -> None:
    share = FairShare(4)
    release = asyncio.Event()
    log: list[str] = []
    slow = [asyncio.create_task(_hold(share, "slow", release, log)) for _ in range(8)]
    await _settle()
    assert share.holding("slow") == 2 and share.in_use == 2
    normal = asyncio.create_task(_hold(share, "normal", release, log))
    await _settle()
    assert log[-1] == "normal" and share.in_use == 3  # not queued behind the slow caller's six waiters
    release.set()
    await asyncio.gather(*slow, normal)
    assert share.in_use == 0 and log.count("slow") == 8


async def test_total_capacity_is_never_exceeded_and_order_is_kept() -> None:
    share = FairShare(2, per_caller=2)
    gates = [asyncio.Event() for _ in range(5)]
    log: list[str] = []
    tasks = [asyncio.create_task(_hold(share, f"c{i}", gates[i], log)) for i in range(5)]
    await _settle()
    assert log == ["c0", "c1"] and share.in_use == 2
    gates[1].set()
    await _settle()
    assert log == ["c0", "c1", "c2"]
    for gate in gates:
        gate.set()
    await asyncio.gather(*tasks)
    assert log == ["c0", "c1", "c2", "c3", "c4"]


async def test_a_cancelled_waiter_gives_nothing_away_and_takes_nothing() -> None:
    share = FairShare(1)
    release = asyncio.Event()
    log: list[str] = []
    holder = asyncio.create_task(_hold(share, "a", release, log))
    await _settle()
    waiter = asyncio.create_task(_hold(share, "b", release, log))
    await _settle()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    third = asyncio.create_task(_hold(share, "c", release, log))
    release.set()
    await asyncio.gather(holder, third)
    assert log == ["a", "c"] and share.in_use == 0


async def test_an_error_in_the_block_frees_the_slot() -> None:
    share = FairShare(1)
    with pytest.raises(RuntimeError):
        async with share.slot("a"):
            raise RuntimeError("boom")
    async with share.slot("a"):
        assert share.in_use == 1


def test_capacity_must_be_positive_and_one_slot_is_shared() -> None:
    with pytest.raises(ValueError):
        FairShare(0)
    assert FairShare(1).per_caller == 1 and FairShare(3).per_caller == 1 and FairShare(8).per_caller == 4
