"""The durable event log and the projections it updates: on one SQLite file (Store,
the embedded default) or in a PostgreSQL database (PostgresStore, for several
replicas). Both have the same interface (BaseStore); the core is written against it."""

from ._errors import StoreError, StoreUnavailable
from ._sqlite import Store
from ._store import BaseStore, StoredRequest

__all__ = ["BaseStore", "PostgresLeases", "PostgresStore", "Store", "StoreError", "StoreUnavailable",
           "StoredRequest", "log_wakeups"]


def __getattr__(name: str):
    # psycopg is imported only when PostgreSQL is used.
    if name == "PostgresStore":
        from ._postgres import PostgresStore

        return PostgresStore
    if name in ("PostgresLeases", "log_wakeups"):
        from . import _replicas

        return getattr(_replicas, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
