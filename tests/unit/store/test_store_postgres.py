"""The PostgreSQL engine on its own: migrations, and what must hold with several
connections writing at once (as several replicas do): a gap-free global order that no
reader ever passes a hole in, event-id dedup, request ids and version numbers."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import pytest

from poet_grpc.core.models import EventFilter
from poet_grpc.store import PostgresStore, StoreError
from poet_grpc.store import _migrations_postgres

pytestmark = pytest.mark.timeout(180)
LATEST = _migrations_postgres.MIGRATIONS[-1][0]
ALL = EventFilter()


@pytest.fixture
def url(postgres_url: str) -> str:
    return postgres_url


def _run_threads(target: Callable[[int], None], count: int) -> list[BaseException]:
    """Run target(0..count-1) on threads at once; the exceptions they raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def run(n: int) -> None:
        try:
            start.wait()
            target(n)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


# -- migrations ------------------------------------------------------------


def test_fresh_database_gets_the_schema(url: str) -> None:
    with PostgresStore(url) as store:
        assert store.schema_version() == LATEST
        assert store._rows("SELECT version FROM schema_migrations") == [(LATEST,)]
        tables = {row[0] for row in store._rows("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"events", "functions", "versions", "metrics", "requests", "ml_executions", "consumers",
            "dead_letters", "signing_keys", "principal_usage", "function_usage", "feedback_reviews"} <= tables


def test_replicas_opening_at_once_migrate_once(url: str) -> None:
    stores = []
    errors = _run_threads(lambda n: stores.append(PostgresStore(url)), 4)
    try:
        assert errors == []
        assert {s.schema_version() for s in stores} == {LATEST}
        assert len({s.page_token_key for s in stores}) == 1  # one key, whoever made it
        assert stores[0]._rows("SELECT COUNT(*) FROM schema_migrations") == [(1,)]
    finally:
        for s in stores:
            s.close()


def test_upgrade_and_failed_migration(url: str, event, monkeypatch) -> None:
    with PostgresStore(url) as store:
        store.append_events([event(id="kept")])
    monkeypatch.setattr(_migrations_postgres, "MIGRATIONS", [
        *_migrations_postgres.MIGRATIONS, (LATEST + 1, "notes", "CREATE TABLE notes (id bigint PRIMARY KEY)"),
    ])
    with PostgresStore(url) as store:
        assert store.schema_version() == LATEST + 1
        assert store.get_event("kept") is not None
    monkeypatch.setattr(_migrations_postgres, "MIGRATIONS", [
        *_migrations_postgres.MIGRATIONS,
        (LATEST + 2, "broken", "CREATE TABLE half_done (id bigint); SELECT no_such_function()"),
    ])
    with pytest.raises(StoreError, match="no_such_function"):
        PostgresStore(url)
    monkeypatch.undo()
    # Left at the version before the broken one: newer than this code knows.
    with pytest.raises(StoreError, match="newer"):
        PostgresStore(url)
    monkeypatch.setattr(_migrations_postgres, "MIGRATIONS", [
        *_migrations_postgres.MIGRATIONS, (LATEST + 1, "notes", "CREATE TABLE notes (id bigint PRIMARY KEY)"),
    ])
    with PostgresStore(url) as store:
        assert store.schema_version() == LATEST + 1
        assert store._rows("SELECT COUNT(*) FROM pg_tables WHERE tablename = 'half_done'") == [(0,)]


def test_page_token_key_is_the_databases(url: str, postgres_server) -> None:
    with PostgresStore(url) as store:
        key = store.page_token_key
    with PostgresStore(url) as store:
        assert store.page_token_key == key and len(key) == 32
    other = postgres_server.create_database()
    try:
        with PostgresStore(postgres_server.url(other)) as store:
            assert store.page_token_key != key
    finally:
        postgres_server.drop_database(other)


def test_an_unreachable_server_is_a_store_error(postgres_server) -> None:
    with pytest.raises(StoreError, match="cannot connect"):
        PostgresStore(postgres_server.url("no_such_database"), connect_timeout=2)


def test_a_failed_statement_is_never_committed(url: str, event) -> None:
    # PostgreSQL turns the COMMIT of a failed transaction into a ROLLBACK; the store
    # must say so rather than report success.
    with PostgresStore(url) as store:
        with pytest.raises(StoreError, match="nothing of it is committed"):
            with store.atomic():
                store.append_events([event(id="a")])
                with pytest.raises(StoreError):
                    store._rows("SELECT no_such_column FROM events")
        assert store.last_position() == 0


# -- many writers at once ------------------------------------------------


def test_readers_never_pass_a_position_below_which_an_event_later_appears(url: str, event) -> None:
    """Appenders on their own connections commit in a random order of durations
    (some roll back); readers tail the log with read_events(after_position). Every
    reader must see every committed event exactly once, in position order."""
    appenders, transactions, readers = 6, 40, 3
    PostgresStore(url).close()  # migrate once, before the race
    committed: dict[str, int] = {}
    lock = threading.Lock()
    done = threading.Event()

    def append(n: int) -> None:
        rng = random.Random(n)
        with PostgresStore(url) as store:
            for t in range(transactions):
                batch = [event(id=f"w{n}-t{t}-e{i}") for i in range(rng.randint(1, 3))]
                roll_back = rng.random() < 0.2
                try:
                    with store.atomic():
                        results = store.append_events(batch)
                        time.sleep(rng.uniform(0, 0.004))  # hold the transaction open
                        if roll_back:
                            raise _RolledBack()
                except _RolledBack:
                    continue
                with lock:
                    committed.update((r.id, r.position) for r in results)

    seen: list[list[tuple[str, int]]] = [[] for _ in range(readers)]

    def read(n: int) -> None:
        with PostgresStore(url) as store:
            after, final = 0, None
            while True:
                events, considered = store.read_events(after, ALL, 7)
                seen[n].extend((e.id, e.position) for e in events)
                assert considered >= after
                after = considered
                if final is not None and after >= final:
                    return
                if final is None and done.is_set():
                    final = store.last_position()  # everything is committed: read up to it

    failures: list[BaseException] = []
    reader_threads = [threading.Thread(target=_catching(read, n, failures)) for n in range(readers)]
    for thread in reader_threads:
        thread.start()
    errors = _run_threads(append, appenders)
    done.set()
    for thread in reader_threads:
        thread.join()
    assert errors == [] and failures == []
    expected = sorted(committed.items(), key=lambda item: item[1])
    assert len(expected) > appenders * transactions  # most transactions committed, with 1-3 events
    for got in seen:
        assert got == expected  # every committed event once, in position order, nothing else
    with PostgresStore(url) as store:
        positions = [e.position for e in store.read_events(0, ALL, 10_000)[0]]
    # Rolled-back appends freed their positions: the committed ones are gap-free.
    assert positions == list(range(1, len(expected) + 1))


class _RolledBack(Exception):
    pass


def _catching(fn: Callable[[int], None], n: int, failures: list[BaseException]) -> Callable[[], None]:
    def run() -> None:
        try:
            fn(n)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            failures.append(exc)

    return run


def test_concurrent_appends_of_the_same_ids_log_each_once(url: str, event) -> None:
    PostgresStore(url).close()
    ids = [f"shared-{i}" for i in range(30)]
    outcomes: list = []

    def append(n: int) -> None:
        rng = random.Random(n)
        with PostgresStore(url) as store:
            for _ in range(10):
                batch = [event(id=i, payload={"writer": n}) for i in rng.sample(ids, 5)]
                outcomes.extend(store.append_events(batch))

    assert _run_threads(append, 6) == []
    with PostgresStore(url) as store:
        logged = store.read_events(0, ALL, 1000)[0]
    positions = {e.id: e.position for e in logged}
    assert len(logged) == len(positions)  # no id twice
    for result in outcomes:
        assert result.position == positions[result.id]
    firsts = [r.id for r in outcomes if not r.duplicate]
    assert sorted(firsts) == sorted(positions)  # exactly one append of each id was not a duplicate


def test_concurrent_writers_number_versions_and_record_requests_once(url: str, enhancement) -> None:
    """The read-then-append of a version number (and of a request id) holds under
    concurrency: every write transaction holds the write lock from its start."""
    PostgresStore(url).close()

    def write(n: int) -> None:
        with PostgresStore(url) as store:
            for k in range(5):
                with store.atomic():
                    number = store.next_version_number("calc")
                    time.sleep(0.001)
                    store.append_events([enhancement("calc", number, content_hash=f"h{n}-{k}")])
                with store.atomic():
                    if store.get_request("same-request") is None:
                        time.sleep(0.001)
                        store.append_events([enhancement("once", store.next_version_number("once"),
                                                         request_id="same-request", request_fingerprint="fp")])

    assert _run_threads(write, 6) == []
    with PostgresStore(url) as store:
        numbers = [v.number for v in store.list_versions("calc", limit=100)]
        assert numbers == list(range(1, 31))
        assert len(store.list_versions("once")) == 1
        assert store.get_request("same-request").result == {"function_name": "once", "version": "v1"}
