"""The REST side of a lost PostgreSQL database (the gRPC side: tests/integration/
test_postgres_outage.py): calls answer 503 with Retry-After and the STORE_UNAVAILABLE
reason at once, readiness answers 503, and after the database is back the same calls
succeed with nothing of the failed ones stored. A PostgreSQL server of its own."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from gateway_support import start_real_service, stop_real_service
from postgres_support import PostgresServer, find_bin_dir


@pytest.fixture
def database():
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("needs Debian's postgresql binaries")
    server = PostgresServer(bin_dir)
    server.start()
    try:
        yield server, server.url(server.create_database())
    finally:
        server.stop()


def _details(body: dict) -> dict[str, dict]:
    return {d["@type"].rsplit(".", 1)[-1]: d for d in body["details"]}


def _publish(*ids: str) -> dict:
    return {"events": [{"id": i, "type": "outage.tick"} for i in ids]}


@pytest.mark.timeout(120)
async def test_rest_calls_answer_503_with_retry_after_while_the_database_is_away(database):
    postgres, url = database
    service = await start_real_service(url, checkpoint_seconds=1.0)
    try:
        async with httpx.AsyncClient(base_url=service.url, timeout=15) as http:
            first = await http.post("/api/v1/events:publish", json=_publish("tick-0"))
            assert first.status_code == 200, first.text

            postgres.halt()
            for path, body in (("/api/v1/events:publish", _publish("tick-1")), ("/api/v1/events", None),
                               ("/api/v1/functions/f/versions", None)):
                started = time.monotonic()
                response = await (http.post(path, json=body) if body else http.get(path))
                assert time.monotonic() - started < 8, f"{path} waited on the lost database"
                assert response.status_code == 503, (path, response.text)
                assert int(response.headers["retry-after"]) >= 1
                found = _details(response.json())
                assert found["ErrorInfo"]["reason"] == "STORE_UNAVAILABLE"
                assert "RetryInfo" in found
                assert "Traceback" not in response.text and "127.0.0.1" not in response.text
            ready = await http.get("/health/ready")
            assert ready.status_code == 503 and ready.json()["checks"]["storage"] is False

            postgres.restart()
            deadline = time.monotonic() + 30
            while (again := await http.post("/api/v1/events:publish", json=_publish("tick-0", "tick-1"))).status_code != 200:
                assert again.status_code == 503 and time.monotonic() < deadline, again.text
                await asyncio.sleep(0.5)
            results = again.json()["results"]
            assert [(r["id"], r.get("duplicate", False)) for r in results] == [("tick-0", True), ("tick-1", False)]
            assert int(results[1]["position"]) == 2  # nothing of the failed publish was stored
            listing = (await http.get("/api/v1/events")).json()
            assert [e["id"] for e in listing["events"]] == ["tick-0", "tick-1"]
    finally:
        await stop_real_service(service)
