"""The durable event log and the projections it updates, on one SQLite file."""

from ._errors import StoreError
from ._store import Store, StoredRequest

__all__ = ["Store", "StoreError", "StoredRequest"]
