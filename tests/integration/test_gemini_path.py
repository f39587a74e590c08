"""Enhance through a server configured for Gemini: the real google-genai client
talks to a local fake that speaks the Gemini REST shape."""

from __future__ import annotations

import dataclasses

import grpc
import pytest
import pytest_asyncio

from fakes.gemini_server import GeminiFake, code_reply, text_reply
from poet_grpc._gen.poet.v1 import poet_service_pb2 as pb, poet_service_pb2_grpc
from poet_grpc.core.models import EnhancementSpec
from poet_grpc.generator import generate
from poet_grpc.api.server import create_server

CODE = "def area(width: float, height: float) -> float:\n    return width * height\n"


@pytest.fixture
def gemini():
    with GeminiFake() as fake:
        yield fake


@pytest_asyncio.fixture
async def gemini_stub(settings, gemini):
    configured = dataclasses.replace(settings, gemini_api_key="test-key", gemini_base_url=gemini.base_url, gemini_timeout_seconds=5)
    server, port = await create_server(configured)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield poet_service_pb2_grpc.PoetServiceStub(channel)
    await server.stop(grace=1)


async def test_gemini_writes_the_version_when_its_code_passes_the_gate(gemini_stub, gemini):
    # What a model might answer: the reference module with its own touch.
    reference = generate(EnhancementSpec(function_name="area", original_code=CODE), version="v1").python
    anchor = "@_poet_enhance_area\ndef area("
    gemini.push(code_reply(reference.replace(anchor, "# Reviewed: areas of rectangles.\n" + anchor, 1)))
    response = await gemini_stub.Enhance(pb.EnhanceRequest(function_name="area", original_code=CODE))
    assert response.metadata.generator == "gemini"
    assert "# Reviewed: areas of rectangles." in response.enhanced_code.python
    assert len(gemini.requests) == 1
    assert "def area(width: float, height: float) -> float" in gemini.requests[0].prompt


async def test_malformed_gemini_answer_falls_back_to_the_template_and_says_why(gemini_stub, gemini):
    gemini.push(text_reply("I would rather not write code today."))
    response = await gemini_stub.Enhance(pb.EnhanceRequest(function_name="area", original_code=CODE))
    assert response.metadata.generator == "template"
    version = (await gemini_stub.GetVersion(pb.GetVersionRequest(function_name="area", version="v1"))).version
    assert version.params["llm_fallback_reason"].startswith("malformed_output")
