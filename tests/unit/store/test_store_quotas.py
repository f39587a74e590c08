"""Quota usage and feedback reviews: charged in the caller's transaction, kept by
reopening and by a rebuild of the projections."""

from __future__ import annotations

import pytest

from poet_grpc.core.errors import QuotaExceeded
from poet_grpc.core.quotas import Quotas, check
from poet_grpc.store import BaseStore


def test_usage_is_charged_per_caller_and_function(store: BaseStore) -> None:
    assert store.quota_usage("id:a", "f") == (0, 0, 0)
    with store.atomic():
        store.charge_quota("id:a", "f", created_function=True, size=100)
        store.charge_quota("id:a", "f", created_function=False, size=50)
        store.charge_quota("id:a", "g", created_function=True, size=7)
        store.charge_quota("id:b", "f", created_function=False, size=1)
    assert store.quota_usage("id:a", "f") == (2, 2, 157)
    assert store.quota_usage("id:a", "g").versions == 1
    assert store.quota_usage("id:b", "f") == (0, 1, 1)


def test_a_rolled_back_charge_leaves_no_trace(store: BaseStore) -> None:
    with pytest.raises(RuntimeError):
        with store.atomic():
            store.charge_quota("id:a", "f", created_function=True, size=100)
            raise RuntimeError("the version was not stored")
    assert store.quota_usage("id:a", "f") == (0, 0, 0)


def test_usage_and_reviews_survive_reopening_and_a_rebuild(open_store, enhancement) -> None:
    with open_store() as store:
        with store.atomic():
            store.append_events([enhancement("f", 1)])
            store.charge_quota("id:a", "f", created_function=True, size=10)
        store.record_feedback_review("fb-1", 1000.0)
        store.record_feedback_review("fb-1", 2000.0)  # again: no error
    with open_store() as store:
        store.rebuild_projections()
        assert store.quota_usage("id:a", "f") == (1, 1, 10)
        assert store.feedback_reviewed("fb-1") and not store.feedback_reviewed("fb-2")


def test_check_lists_every_limit_passed(store: BaseStore, enhancement) -> None:
    with store.atomic():
        store.charge_quota("id:a", "f", created_function=True, size=90)
    limits = Quotas(functions=1, versions_per_function=1, bytes=100)
    with pytest.raises(QuotaExceeded) as refused:
        check(store, limits, "id:a", "g", 20)  # g would be a second function
    assert [v.description for v in refused.value.violations] == [
        "functions created: 1 of 1", "bytes of code stored: 90 of 100; this version needs 20",
    ]
    store.append_events([enhancement("f", 1)])
    with pytest.raises(QuotaExceeded) as refused:
        check(store, limits, "id:a", "f", 0)
    assert [v.description for v in refused.value.violations] == ["versions of f: 1 of 1"]
    # The service (the learning loop) is held to versions per function only; 0 is unlimited.
    assert check(store, limits, "poet:learning-loop", "g", 10**9, service=True) is True
    assert check(store, Quotas(0, 0, 0), "id:a", "g", 10**9) is True
