"""Quotas through REST: a real Envoy in front of the real server."""

from __future__ import annotations

import httpx

from gateway_support import start_real_service, stop_real_service

CODE = "def halve(x: float) -> float:\n    return x / 2\n"


async def test_over_quota_is_429_with_quota_failure_and_stores_nothing(database) -> None:
    service = await start_real_service(database, quota_functions=1)
    try:
        async with httpx.AsyncClient(base_url=service.url, timeout=30, headers={"x-client-id": "carol"}) as http:
            body = {"function_name": "halve", "original_code": CODE, "request_id": "r-1"}
            assert (await http.post("/api/v1/functions/enhance", json=body)).status_code == 200
            events = (await http.get("/api/v1/functions/halve/events")).json()["events"]

            other = {"function_name": "third", "original_code": CODE.replace("halve", "third").replace("/ 2", "/ 3")}
            response = await http.post("/api/v1/functions/enhance", json=other)
            assert response.status_code == 429, response.text
            error = response.json()
            assert error["code"] == 8  # RESOURCE_EXHAUSTED
            details = {d["@type"].rsplit(".", 1)[-1]: d for d in error["details"]}
            assert details["ErrorInfo"]["reason"] == "QUOTA_EXCEEDED"
            (violation,) = details["QuotaFailure"]["violations"]
            assert (violation["subject"], violation["description"]) == ("id:carol", "functions created: 1 of 1")
            assert (await http.get("/api/v1/functions/third/versions")).status_code == 404
            assert (await http.get("/api/v1/functions/halve/events")).json()["events"] == events
            # A retry of what was stored still succeeds at quota.
            retried = await http.post("/api/v1/functions/enhance", json=body)
            assert retried.status_code == 200 and retried.json()["version"] == "v1"
    finally:
        await stop_real_service(service)
