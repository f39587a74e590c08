"""The event log at scale: group commit, the in-memory tail and slow subscribers,
type patterns, the dedup window, retention and OUT_OF_RANGE."""

from __future__ import annotations

import asyncio
import contextlib
import time

import grpc
import pytest

from poet_grpc._gen.poet.v1 import poet_service_pb2 as pb
from poet_grpc.core.db import Database
from poet_grpc.core.event_router import Checkpoint, EventRouter, Retention
from poet_grpc.core.models import EventFilter, EventRecord
from support import details, violated_fields
from test_events import all_events, event, publish, read_stream

DAY = 86400.0


def record(n: int, *, type_: str = "load.test", id_: str = "", timestamp: float | None = None) -> EventRecord:
    return EventRecord(id=id_ or f"e-{n}", type=type_, source="tests",
                       timestamp=time.time() if timestamp is None else timestamp, payload={"n": n})


@pytest.fixture
async def router(tmp_path):
    db = await Database.open(tmp_path / "log.db")
    router = EventRouter(db, environment="test", read_batch=50, tail_events=100)
    await router.start()
    yield router, db
    router.close()
    await db.close()


async def test_concurrent_appends_are_group_committed_gap_free(router, monkeypatch):
    router, db = router
    groups = []
    run_group = db._store.run_group
    monkeypatch.setattr(db._store, "run_group", lambda fns: groups.append(len(fns)) or run_group(fns))
    results = await asyncio.gather(*(router.append([record(n)]) for n in range(300)))
    positions = sorted(r[0].position for r in results)
    assert positions == list(range(1, 301))
    assert sum(groups) == 300 and len(groups) < 300  # many callers shared a commit


async def test_a_failing_transaction_undoes_only_itself_in_its_group(router):
    router, db = router

    def fails(store):
        store.append_events([record(999)])
        raise ValueError("no")

    outcomes = await asyncio.gather(
        router.append([record(1)]), router.commit(fails), router.append([record(2)]), return_exceptions=True
    )
    assert isinstance(outcomes[1], ValueError)
    listed, _ = await router.list_events(EventFilter(), size=100, token="")
    assert [e.id for e in listed] == ["e-1", "e-2"] and [e.position for e in listed] == [1, 2]


async def test_a_slow_subscriber_falls_back_to_the_log_and_loses_nothing(router):
    router, db = router
    stream = router.subscribe(EventFilter(), checkpoint_seconds=30)
    assert await anext(stream) == Checkpoint(0, caught_up=True)
    # Far more than the in-memory tail holds while the subscriber reads nothing.
    for start in range(0, 1000, 100):
        await router.append([record(n) for n in range(start, start + 100)])
    assert len(router._tail) <= 2 * 100
    got = []
    while len(got) < 1000:
        item = await anext(stream)
        if isinstance(item, EventRecord):
            got.append(item.position)
    assert got == list(range(1, 1001))
    await router.append([record(1000)])
    assert (await anext(stream)).position == 1001  # live again, from the tail


async def test_type_patterns_filter_lists_and_streams(stub):
    call = stub.StreamEvents(pb.StreamEventsRequest(event_type="sensor.*"))
    await publish(stub, event("sensor.spike"), event("sensorless.thing"), event("alert.note"),
                  event("sensor.summary"), event("sensor"))
    streamed, _ = await read_stream(call, 2)
    assert [e.type for e in streamed] == ["sensor.spike", "sensor.summary"]
    call.cancel()
    listed = [e.type for e in await all_events(stub, event_type="sensor.*")]
    assert listed == ["sensor.spike", "sensor.summary"]
    assert [e.type for e in await all_events(stub, event_type="sensor*")] == [
        "sensor.spike", "sensorless.thing", "sensor.summary", "sensor"]
    assert len(await all_events(stub, event_type="*")) == 5


async def test_type_pattern_star_only_at_the_end(stub):
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.ListEvents(pb.ListEventsRequest(event_type="dr*ift"))
    assert violated_fields(failure.value) == {"event_type"}


async def test_stream_filters_by_correlation_id(stub):
    call = stub.StreamEvents(pb.StreamEventsRequest(correlation_id="c-9"))
    await publish(stub, event("a.b", correlation_id="c-1"), event("a.c", correlation_id="c-9"))
    streamed, _ = await read_stream(call, 1)
    assert [e.type for e in streamed] == ["a.c"]
    call.cancel()


@pytest.mark.checkpoint_seconds(0.3)
async def test_busy_filtered_stream_still_gets_checkpoints(stub):
    call = stub.StreamEvents(pb.StreamEventsRequest(function_name="quiet"))
    stop = asyncio.Event()

    async def noise():
        while not stop.is_set():
            await publish(stub, event("noise.only", "loud"))

    task = asyncio.create_task(noise())
    try:
        positions = []
        async for item in call:
            if item.HasField("checkpoint"):
                positions.append(item.checkpoint.position)
                if len(positions) >= 3 and positions[-1] > positions[0]:
                    break
    finally:
        stop.set()
        await task
        call.cancel()


async def test_many_subscribers_each_receive_every_event(stub):
    calls = [stub.StreamEvents(pb.StreamEventsRequest()) for _ in range(30)]
    readers = [asyncio.create_task(read_stream(c, 300, timeout=60)) for c in calls]
    for start in range(0, 300, 50):
        await publish(stub, *(event("fan.out", n=n) for n in range(start, start + 50)))
    for reader in readers:
        events, _ = await reader
        assert [e.position for e in events] == list(range(1, 301))
    for c in calls:
        c.cancel()


@contextlib.contextmanager
def appended_days_ago(server, days: float):
    """Events appended inside are stamped as appended `days` ago (retention goes by append time)."""
    store = server.core.db._store
    real = store._clock
    store._clock = lambda: real() - days * DAY
    try:
        yield
    finally:
        store._clock = real


async def test_dedup_window_is_the_retention_period(server, stub):
    """An id is a duplicate for as long as its event is in the log; once retention
    has deleted it, the id may be used again."""
    with appended_days_ago(server, 40):
        [first] = await publish(stub, event("a.b", id_="dup-1"))
    await publish(stub, event("a.b", id_="keep"))
    [again] = await publish(stub, event("a.b", id_="dup-1"))
    assert again.duplicate and again.position == first.position
    assert await server.core.retention.run_once() == 1
    [reused] = await publish(stub, event("a.b", id_="dup-1"))
    assert not reused.duplicate and reused.position == 3


async def test_retention_trims_the_start_and_expired_positions_are_out_of_range(server, stub):
    old = int(time.time() - 31 * DAY)
    with appended_days_ago(server, 31):
        await publish(stub, *(event("old.event") for _ in range(5)))
    # A claimed old timestamp does not make an event expire: it was appended now.
    await publish(stub, event("new.event"), event("old.claim", seconds=old), event("new.event"))
    deleted = await server.core.retention.run_once()
    assert deleted == 5
    assert [e.position for e in await all_events(stub)] == [6, 7, 8]

    call = stub.StreamEvents(pb.StreamEventsRequest(after_position=2))
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        async for _ in call:
            pass
    assert failure.value.code() == grpc.StatusCode.OUT_OF_RANGE
    info = details(failure.value)["ErrorInfo"]
    assert info.reason == "POSITION_EXPIRED" and info.metadata["earliest_position"] == "6"
    assert info.metadata["resume_after_position"] == "5"

    resumed = stub.StreamEvents(pb.StreamEventsRequest(after_position=5))
    events, _ = await read_stream(resumed, 3)
    assert [e.position for e in events] == [6, 7, 8]
    resumed.cancel()
    whole = stub.StreamEvents(pb.StreamEventsRequest(after_position=0))  # 0: whatever is kept
    events, _ = await read_stream(whole, 3)
    assert [e.position for e in events] == [6, 7, 8]
    whole.cancel()


async def test_positions_stay_monotonic_when_retention_empties_the_log(server, stub):
    with appended_days_ago(server, 60):
        await publish(stub, *(event("old.event") for _ in range(4)))
    await server.core.retention.run_once()
    assert [e.position for e in await all_events(stub)] == [4]  # the last one is always kept
    [result] = await publish(stub, event("next.event"))
    assert result.position == 5


async def test_list_page_token_behind_retention_is_out_of_range(server, stub):
    with appended_days_ago(server, 60):
        await publish(stub, *(event("old.event") for _ in range(4)))
    await publish(stub, event("new.event"))
    page = await stub.ListEvents(pb.ListEventsRequest(page_size=1))
    await server.core.retention.run_once()
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.ListEvents(pb.ListEventsRequest(page_size=1, page_token=page.next_page_token))
    assert failure.value.code() == grpc.StatusCode.OUT_OF_RANGE


async def test_retention_zero_keeps_everything(tmp_path):
    db = await Database.open(tmp_path / "keep.db")
    try:
        retention = Retention(db, days=0)
        retention.start()  # does nothing
        await retention.stop()
    finally:
        await db.close()


# -- batched streams -------------------------------------------------------------


async def read_batches(call, count: int, timeout: float = 10.0) -> tuple[list[list], list]:
    """Batches (lists of events) from a batched stream until `count` events, and the checkpoints."""
    batches, checkpoints = [], []

    async def collect():
        async for item in call:
            assert not item.HasField("event"), "a batched stream sent a single event"
            if item.HasField("batch"):
                batches.append(list(item.batch.events))
                if sum(map(len, batches)) >= count:
                    return
            else:
                checkpoints.append(item.checkpoint)

    await asyncio.wait_for(collect(), timeout)
    return batches, checkpoints


async def test_batched_stream_sends_backlog_and_live_events_in_order_in_batches(stub):
    await publish(stub, *(event("batch.backlog", n=n) for n in range(25)))
    single = stub.StreamEvents(pb.StreamEventsRequest())
    one_by_one, _ = await read_stream(single, 25)
    single.cancel()

    call = stub.StreamEvents(pb.StreamEventsRequest(max_batch_size=10))
    batches, checkpoints = await read_batches(call, 25)
    assert all(1 <= len(b) <= 10 for b in batches) and len(batches) < 25
    assert [e for b in batches for e in b] == one_by_one  # the same events, whole
    await publish(stub, *(event("batch.live", n=n) for n in range(30)))
    live, checkpoints = await read_batches(call, 30)
    assert [e.position for b in live for e in b] == list(range(26, 56))
    assert all(len(b) <= 10 for b in live)
    assert any(c.caught_up and c.position == 25 for c in checkpoints)
    call.cancel()


async def test_batched_stream_applies_filters_and_resumes_after_a_position(stub):
    results = await publish(stub, *(event("keep.this" if n % 3 == 0 else "skip.this", n=n) for n in range(30)))
    call = stub.StreamEvents(pb.StreamEventsRequest(event_type="keep.*", max_batch_size=4,
                                                    after_position=results[5].position))
    batches, _ = await read_batches(call, 8)
    call.cancel()
    assert [e.payload["n"] for b in batches for e in b] == [6, 9, 12, 15, 18, 21, 24, 27]
    assert {e.type for b in batches for e in b} == {"keep.this"}


@pytest.mark.parametrize("size", [-1, 1001])
async def test_batch_size_out_of_range_is_invalid(stub, size):
    call = stub.StreamEvents(pb.StreamEventsRequest(max_batch_size=size))
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        async for _ in call:
            pass
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(failure.value) == {"max_batch_size"}


async def test_many_batched_subscribers_each_receive_every_event(stub):
    calls = [stub.StreamEvents(pb.StreamEventsRequest(max_batch_size=64)) for _ in range(20)]
    readers = [asyncio.create_task(read_batches(c, 400, timeout=60)) for c in calls]
    for start in range(0, 400, 100):
        await publish(stub, *(event("fan.batch", n=n) for n in range(start, start + 100)))
    for reader in readers:
        batches, _ = await reader
        assert [e.position for b in batches for e in b] == list(range(1, 401))
    for c in calls:
        c.cancel()


# -- log consumers ---------------------------------------------------------------


async def test_consumer_handles_wanted_events_once_per_batch_and_saves_its_position(router, monkeypatch):
    from poet_grpc.core import consumer

    router, db = router
    monkeypatch.setattr(consumer, "SAVE_SECONDS", 0.0)  # save after every batch
    handled: list[int] = []
    batch_ends: list[int] = []

    async def handle(e: EventRecord) -> bool:
        handled.append(e.position)
        return False

    async def after_batch() -> None:
        batch_ends.append(len(handled))

    def run():
        return asyncio.create_task(consumer.consume(
            db, router, "test", handle, checkpoint_seconds=30,
            wants=lambda e: e.type == "wanted.one", after_batch=after_batch))

    for start in range(0, 200, 50):
        await router.append([record(n, type_="wanted.one" if n % 2 else "other.one") for n in range(start, start + 50)])
    task = run()
    await until_true(lambda: len(handled) == 100)
    assert handled == [n + 1 for n in range(200) if n % 2]  # positions of the odd n, in order
    assert 1 <= len(batch_ends) < 100  # once per batch, not once per event
    await until_position(db, "test", 200)
    task.cancel()

    # A restart resumes after the saved position: nothing is handled twice.
    handled.clear()
    await router.append([record(n, type_="wanted.one") for n in range(200, 203)])
    task = run()
    await until_true(lambda: len(handled) == 3)
    await asyncio.sleep(0.1)
    assert handled == [201, 202, 203]
    task.cancel()


async def until_true(condition, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def until_position(db: Database, name: str, position: int, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while await db.call(lambda store: store.consumer_position(name)) < position:
            await asyncio.sleep(0.01)
