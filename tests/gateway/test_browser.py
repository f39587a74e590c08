"""A real browser (Debian's headless Chromium) against the real service behind
Envoy: CORS from a page on another origin, and an EventSource that resumes by
itself, with Last-Event-ID, after its connection is cut mid-stream."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import pytest_asyncio

from browser import Browser, BrowserError, PageServer, missing
from gateway_support import start_real_service, stop_real_service

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(missing() is not None, reason=missing() or ""),
]


@pytest.fixture(scope="module")
def pages():
    with PageServer() as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def service(new_database, pages):
    # Pages on http://127.0.0.1:PORT may call the API; the same page as http://localhost:PORT may not.
    service = await start_real_service(new_database(),
                                       cors_origins=f"http://127.0.0.1:{pages.port}", checkpoint_seconds=0.5)
    yield service
    await stop_real_service(service)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser():
    async with Browser() as browser:
        yield browser


async def _logged(service, function_name: str) -> list[int]:
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:
        response = await client.get(f"/api/v1/functions/{function_name}/events", params={"limit": 1000})
        assert response.status_code == 200, response.text
        return [int(e["position"]) for e in response.json().get("events", [])]


CALLS = """
(async () => {
  const api = %(api)s;
  const get = await fetch(api + '/v1/domains');
  const post = await fetch(api + '/api/v1/events:publish', {
    method: 'POST',  // JSON and x-request-id: a preflighted request
    headers: {'content-type': 'application/json', 'x-request-id': 'from-the-page'},
    body: JSON.stringify({events: [{type: 'browser.cors', function_name: %(function)s}]}),
  });
  const missing = await fetch(api + '/api/v1/functions/nothing/versions/v1');
  return {
    get: [get.status, (await get.json()).domains.length],
    post: [post.status, (await post.json()).results.length, post.headers.get('x-request-id')],
    missing: [missing.status, (await missing.json()).code],
  };
})()
"""

BLOCKED = """
(async () => {
  const outcome = async (request) => {
    try { const r = await request; return 'read ' + r.status; } catch (e) { return e.name; }
  };
  return {
    get: await outcome(fetch(%(api)s + '/v1/domains')),
    post: await outcome(fetch(%(api)s + '/api/v1/events:publish', {
      method: 'POST', headers: {'content-type': 'application/json'},
      body: JSON.stringify({events: [{type: 'browser.cors', function_name: %(function)s}]}),
    })),
  };
})()
"""


async def test_a_page_on_a_listed_origin_calls_the_api_and_another_is_blocked(browser, pages, service) -> None:
    api = json.dumps(service.url)
    assert await browser.goto(f"http://127.0.0.1:{pages.port}/") == 200
    result = await browser.evaluate(CALLS % {"api": api, "function": json.dumps("cors_page")})
    assert result["get"][0] == 200 and result["get"][1] > 0
    assert result["post"] == [200, 1, "from-the-page"]  # preflighted, sent, read; an exposed header read
    assert result["missing"] == [404, 5]  # errors are readable too
    assert len(await _logged(service, "cors_page")) == 1

    # The same page under an origin that is not listed: the browser refuses.
    assert await browser.goto(f"http://localhost:{pages.port}/") == 200
    result = await browser.evaluate(BLOCKED % {"api": api, "function": json.dumps("cors_blocked")})
    assert result == {"get": "TypeError", "post": "TypeError"}
    assert await _logged(service, "cors_blocked") == []  # the preflight failed, so the POST was never sent


OPEN = """
(() => {
  window.got = []; window.ids = []; window.opens = 0; window.errors = 0;
  const source = new EventSource(%(url)s);
  source.onopen = () => { window.opens += 1; };
  source.onerror = () => { window.errors += 1; };
  source.onmessage = (message) => {
    const data = JSON.parse(message.data);
    if (data.event) {
      window.got.push(Number(data.event.position));
      window.ids.push(message.lastEventId);
    }
  };
  window.source = source;
  return true;
})()
"""


async def test_an_event_source_resumes_by_itself_after_a_cut_with_nothing_lost_or_repeated(
        browser, pages, service) -> None:
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:
        async def publish(count: int) -> list[int]:
            response = await client.post("/api/v1/events:publish", json={
                "events": [{"type": "browser.sse", "function_name": "browser_sse"} for _ in range(count)]})
            assert response.status_code == 200, response.text
            return [int(r["position"]) for r in response.json()["results"]]

        published = await publish(5)
        # after_position in the URL: the browser repeats it on every reconnect, and
        # Last-Event-ID must win over it (else the backlog would come again).
        url = f"{service.url}/api/v1/functions/browser_sse/events:stream?after_position={published[0] - 1}"
        assert await browser.goto(f"http://127.0.0.1:{pages.port}/") == 200
        await browser.evaluate(OPEN % {"url": json.dumps(url)})
        await browser.wait_for("window.got.length >= 5")

        async def publish_slowly() -> None:
            for _ in range(20):
                published.extend(await publish(1))
                await asyncio.sleep(0.05)

        more = asyncio.ensure_future(publish_slowly())
        try:
            await browser.wait_for("window.got.length >= 10")
            # Mid-stream: the connection drops, as a network failure would.
            assert service.gateway.http_side.abort_connections() >= 1
            await more
        finally:
            more.cancel()
        await browser.wait_for(f"window.got.length >= {len(published)}", timeout=30)
        await asyncio.sleep(0.5)  # nothing more may come
        state = await browser.evaluate("({got: window.got, ids: window.ids, opens: window.opens,"
                                       " errors: window.errors, state: window.source.readyState})")
        await browser.evaluate("window.source.close()")
    assert state["got"] == published  # in order, none lost, none twice
    assert state["ids"] == [str(p) for p in published]
    assert state["errors"] >= 1 and state["opens"] >= 2  # it did reconnect, by itself
    assert state["state"] == 1  # OPEN again


async def test_the_driver_reports_page_errors(browser) -> None:
    with pytest.raises(BrowserError, match="boom"):
        await browser.evaluate("(() => { throw new Error('boom'); })()")
