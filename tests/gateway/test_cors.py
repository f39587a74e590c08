"""CORS on the gateway (Envoy's cors filter), over plain HTTP: POET_CORS_ORIGINS
parsing; preflights from a listed origin answered with that origin, Vary: Origin,
the methods, headers and max-age; answers to it readable (Allow-Origin, exposed
headers), errors and streams included; nothing for any other origin, nor
without origins. (tests/gateway/test_browser.py does the same from Chromium.)"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from gateway_support import start_real_service, stop_real_service
from poet_grpc.api.gateway import CORS_ALLOW_HEADERS, CORS_EXPOSE_HEADERS, render_config
from poet_grpc.cli import main as cli_main
from poet_grpc.config import Settings, parse_cors_origins

pytestmark = pytest.mark.asyncio(loop_scope="module")

APP = "http://app.example:3000"
OTHER = "https://other.example"
EVIL = "http://evil.example:3000"


# -- the setting -------------------------------------------------------------------------

async def test_origins_are_parsed_as_browsers_write_them() -> None:
    assert parse_cors_origins("") == ()
    assert parse_cors_origins(" HTTPS://App.Example:443 , http://localhost:3000,http://[::1]:8080,,"
                              "https://app.example") == ("https://app.example", "http://localhost:3000",
                                                         "http://[::1]:8080")
    assert parse_cors_origins("http://a.example:80,http://a.example:8080") == ("http://a.example",
                                                                              "http://a.example:8080")


@pytest.mark.parametrize("bad", ["*", "https://*.example.com", "https://app.example/", "https://app.example/x",
                                 "null", "app.example", "https://user@app.example", "https://app.example:99999",
                                 "https://app.example?x=1", "https://app.example#x", "http://a.example:0",
                                 "https://app example"])
async def test_anything_but_an_exact_origin_is_refused(bad) -> None:
    with pytest.raises(ValueError, match="cors_origins"):
        parse_cors_origins(bad)
    with pytest.raises(ValueError, match="cors_origins"):
        Settings.from_env({"POET_CORS_ORIGINS": f"{APP},{bad}"})
    with pytest.raises(ValueError, match="cors_origins"):
        render_config(grpc_address="127.0.0.1:50051", http_address="127.0.0.1:0", descriptor_path=Path("x.pb"),
                      side_socket="/run/poet-side/http.sock", cors_origins=[bad])


async def test_the_flag_and_the_variable_set_the_origins(capsys) -> None:
    assert Settings.from_env({"POET_CORS_ORIGINS": APP}).cors_origins == APP
    assert Settings.from_env({"POET_CORS_ORIGINS": APP}, cors_origins=OTHER).cors_origins == OTHER
    assert Settings().cors_origins == ""  # none by default
    assert cli_main(["serve", "--cors-origins", "https://*.example.com"]) == 2
    assert "cors_origins" in capsys.readouterr().err


async def test_without_origins_the_config_has_no_policy(tmp_path) -> None:
    config = render_config(grpc_address="127.0.0.1:50051", http_address="127.0.0.1:0",
                           descriptor_path=tmp_path / "x.pb", side_socket=tmp_path / "s.sock")
    settings = "\n".join(line for line in config.splitlines() if not line.lstrip().startswith("#"))
    assert "CorsPolicy" not in settings and "Origin" not in settings
    config = render_config(grpc_address="127.0.0.1:50051", http_address="127.0.0.1:0",
                           descriptor_path=tmp_path / "x.pb", side_socket=tmp_path / "s.sock",
                           cors_origins=[APP])
    assert '"allow_origin_string_match": [{"exact": "http://app.example:3000"}]' in config
    assert "safe_regex" not in config.split("CorsPolicy")[1].split("routes:")[0]  # exact matches only


# -- a real gateway ------------------------------------------------------------------------

@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def service(new_database):
    service = await start_real_service(new_database(), cors_origins=f"{APP}, {OTHER}",
                                       checkpoint_seconds=0.3)
    yield service
    await stop_real_service(service)


@pytest_asyncio.fixture(loop_scope="module")
async def http(service):
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:
        yield client


def _cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


def _listed(value: str) -> set[str]:
    return {item.strip().lower() for item in value.split(",")}


@pytest.mark.parametrize("origin", [APP, OTHER])
@pytest.mark.parametrize(("method", "path", "asked"), [
    ("POST", "/api/v1/events:publish", "content-type, authorization, x-request-id, traceparent"),
    ("GET", "/api/v1/events:stream", "last-event-id"),
    ("GET", "/v1/domains", ""),
])
async def test_a_preflight_from_a_listed_origin_is_answered(http, origin, method, path, asked) -> None:
    headers = {"origin": origin, "access-control-request-method": method}
    if asked:
        headers["access-control-request-headers"] = asked
    response = await http.options(path, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == origin  # never "*"
    assert "origin" in _listed(response.headers["vary"])
    assert {"get", "post"} <= _listed(response.headers["access-control-allow-methods"])
    allowed = _listed(response.headers["access-control-allow-headers"])
    assert set(CORS_ALLOW_HEADERS) <= allowed and (_listed(asked) - {""}) <= allowed
    assert int(response.headers["access-control-max-age"]) == 600
    assert "*" not in "".join(_cors_headers(response).values())


@pytest.mark.parametrize("origin", [EVIL, "http://app.example:3001", "http://app.example", "null",
                                    "http://app.example:3000.evil.example"])
async def test_a_preflight_from_any_other_origin_gets_no_cors_headers(http, origin) -> None:
    response = await http.options("/api/v1/events:publish", headers={
        "origin": origin, "access-control-request-method": "POST", "access-control-request-headers": "content-type"})
    assert _cors_headers(response) == {}
    assert response.status_code == 404  # the transcoder: no such method


async def test_answers_to_a_listed_origin_are_readable_and_others_not(http) -> None:
    sent_id = "cors-req-1"
    for path in ("/v1/domains", "/api/v1/functions/nothing/versions/v1", "/no/such/path"):
        response = await http.get(path, headers={"origin": APP, "x-request-id": sent_id})
        assert response.headers["access-control-allow-origin"] == APP, path
        assert _listed(response.headers["access-control-expose-headers"]) == set(CORS_EXPOSE_HEADERS)
        assert "origin" in _listed(response.headers["vary"])
        assert response.headers["x-request-id"] == sent_id  # echoed, so a page can quote it
        other = await http.get(path, headers={"origin": EVIL})
        assert other.status_code == response.status_code and _cors_headers(other) == {}
    published = await http.post("/api/v1/events:publish", headers={"origin": OTHER},
                                json={"events": [{"type": "cors.seen"}]})
    assert published.status_code == 200 and published.headers["access-control-allow-origin"] == OTHER


async def test_streams_and_metrics_answer_a_listed_origin_too(http) -> None:
    async with http.stream("GET", "/api/v1/events:stream", headers={"origin": APP}) as response:
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == APP
    async with http.stream("GET", "/api/v1/events:stream", headers={"origin": EVIL}) as response:
        assert response.status_code == 200 and _cors_headers(response) == {}
    metrics = await http.get("/metrics", headers={"origin": APP})
    assert metrics.headers["access-control-allow-origin"] == APP


async def test_without_origins_the_gateway_sends_no_cors_headers(base_url) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        preflight = await client.options("/v1/domains", headers={"origin": APP, "access-control-request-method": "GET"})
        assert _cors_headers(preflight) == {} and "vary" not in preflight.headers
        answer = await client.get("/v1/domains", headers={"origin": APP})
        assert answer.status_code == 200 and _cors_headers(answer) == {} and "vary" not in answer.headers
