"""KeyedLocks: one lock per key, serving a key's users in order, kept only while in use."""

import asyncio

from poet_grpc.core.keyed_locks import KeyedLocks


async def test_one_key_is_serialised_other_keys_run_alongside_and_nothing_is_kept():
    locks = KeyedLocks()
    order: list[str] = []

    async def work(key: str, tag: str) -> None:
        async with locks.hold(key):
            order.append(f"{tag}+")
            await asyncio.sleep(0.01)
            order.append(f"{tag}-")

    await asyncio.gather(work("f", "a"), work("f", "b"), work("g", "c"))
    assert order.index("a-") < order.index("b+")  # b waited for a
    assert order.index("c+") < order.index("a-")  # g did not wait for f
    assert len(locks) == 0 and locks.users("f") == 0


async def test_a_waiter_cancelled_in_the_queue_leaves_no_entry():
    locks = KeyedLocks()
    release = asyncio.Event()

    async def holder() -> None:
        async with locks.hold("f"):
            await release.wait()

    async def waiter() -> None:
        async with locks.hold("f"):
            pass

    held = asyncio.create_task(holder())
    await asyncio.sleep(0)
    queued = asyncio.create_task(waiter())
    await asyncio.sleep(0)
    assert locks.users("f") == 2
    queued.cancel()
    await asyncio.gather(queued, return_exceptions=True)
    assert locks.users("f") == 1
    release.set()
    await held
    assert len(locks) == 0
