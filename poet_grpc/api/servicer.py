"""PoetService: maps requests to the core and results back. No business logic;
validation and error mapping happen in interceptors."""

from __future__ import annotations

from typing import AsyncIterator

import grpc

from poet_grpc.api import mapping
from poet_grpc._gen.poet.v1 import events_pb2, poet_service_pb2 as pb, poet_service_pb2_grpc
from poet_grpc.config import Settings
from poet_grpc.core.app import Core
from poet_grpc.core.event_router import Checkpoint
from poet_grpc.core.principal import current
from poet_grpc.api.interceptors.rate_limit import client_key


def _caller(context: grpc.aio.ServicerContext) -> str:
    """Who is calling, for the generator's fair share and quotas (as the rate limiter sees it)."""
    principal = current()
    return principal.key if principal is not None else client_key(context.invocation_metadata(), context.peer())


class PoetServicer(poet_service_pb2_grpc.PoetServiceServicer):
    def __init__(self, core: Core, settings: Settings):
        self._core = core
        self._settings = settings
        self._stream_messages = mapping.StreamMessages()
        self._domains: pb.ListDomainsResponse | None = None

    async def Enhance(self, request: pb.EnhanceRequest, context: grpc.aio.ServicerContext) -> pb.EnhanceResponse:
        version = await self._core.enhancements.enhance(
            mapping.spec_from_enhance(request), request_id=request.request_id, caller=_caller(context)
        )
        return pb.EnhanceResponse(
            enhanced_code=mapping.enhanced_code(version),
            version=version.version,
            metadata=mapping.enhancement_metadata(version),
            function_name=version.function_name,
        )

    async def EnhanceTranspiled(self, request, context) -> pb.EnhanceTranspiledResponse:
        version = await self._core.enhancements.enhance(
            mapping.spec_from_transpiled(request), request_id=request.request_id, code_field="python_code",
            caller=_caller(context),
        )
        return pb.EnhanceTranspiledResponse(
            transpilation_id=request.transpilation_id,
            enhanced_code=mapping.enhanced_code(version),
            poet_metadata=mapping.enhancement_metadata(version),
            success=True,
            version=version.version,
        )

    async def EnhanceExternal(self, request, context) -> pb.EnhanceExternalResponse:
        spec = mapping.spec_from_external(request)
        version = await self._core.enhancements.enhance(
            spec, request_id=request.request_id, code_field="function_code", caller=_caller(context)
        )
        return pb.EnhanceExternalResponse(
            enhanced_code=mapping.enhanced_code(version),
            version=version.version,
            metadata=mapping.enhancement_metadata(version),
            function_name=version.function_name,
        )

    async def SubmitFeedback(self, request, context) -> pb.SubmitFeedbackResponse:
        outcome = await self._core.feedback.submit(mapping.feedback(request), request_id=request.request_id)
        return mapping.feedback_response(outcome)

    async def ListVersions(self, request, context) -> pb.ListVersionsResponse:
        versions, current, token = await self._core.versions.list_versions(
            request.function_name, size=request.page_size, token=request.page_token
        )
        return pb.ListVersionsResponse(
            versions=[mapping.function_version(v, with_code=False) for v in versions],
            current_version=current,
            next_page_token=token,
        )

    async def GetVersion(self, request, context) -> pb.GetVersionResponse:
        detail = await self._core.versions.get_detail(request.function_name, request.version)
        return pb.GetVersionResponse(version=mapping.version_detail(detail))

    async def ActivateVersion(self, request, context) -> pb.ActivateVersionResponse:
        version, previous = await self._core.versions.activate(request.function_name, request.version, reason=request.reason)
        return pb.ActivateVersionResponse(version=mapping.function_version(version, with_code=False), previous_version=previous)

    async def DeprecateVersion(self, request, context) -> pb.DeprecateVersionResponse:
        version = await self._core.versions.deprecate(request.function_name, request.version, reason=request.reason)
        return pb.DeprecateVersionResponse(version=mapping.function_version(version, with_code=False))

    async def ListEvents(self, request, context) -> pb.ListEventsResponse:
        events, token = await self._core.events.list_events(
            mapping.event_filter(request), size=request.page_size or request.limit, token=request.page_token
        )
        return pb.ListEventsResponse(events=[mapping.event(e) for e in events], next_page_token=token)

    async def StreamEvents(self, request, context) -> AsyncIterator[pb.StreamEventsResponse]:
        # Events from the live tail are the same objects for every subscriber:
        # each is converted to a message once, not once per subscriber.
        messages = self._stream_messages
        batched = request.max_batch_size > 0
        async for item in self._core.events.subscribe_batches(
            mapping.event_filter(request), after_position=request.after_position, live_only=request.live_only,
            checkpoint_seconds=self._settings.checkpoint_seconds, max_batch=request.max_batch_size,
        ):
            if isinstance(item, Checkpoint):
                yield messages.get(item)
            elif batched:
                yield messages.batch(item)
            else:
                for event in item:
                    yield messages.get(event)

    async def PublishEvents(self, request, context) -> pb.PublishEventsResponse:
        records = [mapping.event_record(e, environment=self._settings.environment) for e in request.events]
        results = await self._core.events.append(records)
        return pb.PublishEventsResponse(
            results=[events_pb2.PublishResult(id=r.id, position=r.position, duplicate=r.duplicate) for r in results]
        )

    async def ListDomains(self, request, context) -> pb.ListDomainsResponse:
        # The domains are fixed while the process runs; building the message took ~2.5 ms.
        if self._domains is None:
            self._domains = pb.ListDomainsResponse(domains=[mapping.domain(d) for d in self._core.domains()])
        return self._domains

    async def ListDeadLetters(self, request, context) -> pb.ListDeadLettersResponse:
        letters, token = await self._core.integrations.list_dead_letters(
            request.sink, size=request.page_size, token=request.page_token
        )
        return pb.ListDeadLettersResponse(dead_letters=[mapping.dead_letter(d) for d in letters], next_page_token=token)

    async def ReplayDeadLetters(self, request, context) -> pb.ReplayDeadLettersResponse:
        letters = await self._core.integrations.replay(request.sink, ids=[int(i) for i in request.ids], replay_all=request.all)
        return pb.ReplayDeadLettersResponse(dead_letters=[mapping.dead_letter(d) for d in letters])
