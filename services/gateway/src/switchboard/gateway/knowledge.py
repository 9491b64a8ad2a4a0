"""`switchboard.v1.KnowledgeService` at the gateway: authenticate the API key, then forward
the call to the knowledge service with the tenant the key belongs to (`sb-tenant-id`).

The request body never names the tenant, so a caller reaches only its own documents.
Statuses from the knowledge service (INVALID_ARGUMENT, NOT_FOUND ...) reach the caller as
they are; an unreachable knowledge service is UNAVAILABLE.
"""

import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeAlias, TypeVar

import grpc
from google.protobuf.message import Message
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from switchboard.common.telemetry import grpc_client_interceptors
from switchboard.gateway.auth import TenantAuthenticator, TenantLookupError
from switchboard.v1 import knowledge_pb2, knowledge_pb2_grpc
from switchboard.v1.knowledge_pb2 import (
    DeleteDocumentRequest,
    DeleteDocumentResponse,
    ListDocumentsRequest,
    ListDocumentsResponse,
    SearchKnowledgeRequest,
    SearchKnowledgeResponse,
    UpsertDocumentRequest,
    UpsertDocumentResponse,
)

log = logging.getLogger(__name__)

SERVICE_NAME = knowledge_pb2.DESCRIPTOR.services_by_name["KnowledgeService"].full_name
TENANT_METADATA = "sb-tenant-id"
Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
R = TypeVar("R", bound=Message)


class KnowledgeClientSettings(BaseSettings):
    """Where the gateway finds the knowledge service (`SWITCHBOARD_GATEWAY_KNOWLEDGE_*`)."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_GATEWAY_KNOWLEDGE_")

    target: str = Field(default="127.0.0.1:15053", description="The knowledge service's address.")
    timeout_s: float = Field(
        default=10.0, gt=0, description="Deadline of a forwarded search, list or delete."
    )
    upsert_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="Deadline of a forwarded upsert (extraction and embedding of a large file).",
    )
    max_message_bytes: int = Field(
        default=8 * 1024 * 1024,
        gt=0,
        description="Largest message on the channel to the knowledge service.",
    )


async def _abort(context: Context, code: grpc.StatusCode, message: str) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("unreachable")


class KnowledgeForwarder(knowledge_pb2_grpc.KnowledgeServiceServicer):
    """The public KnowledgeService: authenticate, then forward with the tenant."""

    def __init__(
        self, authenticator: TenantAuthenticator, settings: KnowledgeClientSettings
    ) -> None:
        self._authenticator = authenticator
        self._settings = settings
        limit = settings.max_message_bytes
        self._channel = grpc.aio.insecure_channel(
            settings.target,
            options=[
                ("grpc.max_send_message_length", limit),
                ("grpc.max_receive_message_length", limit),
            ],
            interceptors=grpc_client_interceptors(),
        )
        self._stub = knowledge_pb2_grpc.KnowledgeServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def _forward(
        self,
        context: Context,
        call: Callable[..., Awaitable[R]],
        request: Message,
        timeout_s: float,
    ) -> R:
        try:
            tenant = await self._authenticator.tenant_for(context.invocation_metadata() or ())
        except TenantLookupError as exc:
            await _abort(context, grpc.StatusCode.UNAVAILABLE, str(exc))
        if tenant is None:
            await _abort(context, grpc.StatusCode.UNAUTHENTICATED, "missing or unknown API key")
        remaining = context.time_remaining()
        if remaining is not None:
            timeout_s = min(timeout_s, remaining)
        try:
            return await call(
                request, metadata=((TENANT_METADATA, tenant.tenant_id),), timeout=timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN):
                log.warning("knowledge service unavailable: %s", exc.details())
                await _abort(
                    context, grpc.StatusCode.UNAVAILABLE, "the knowledge service is unavailable"
                )
            await _abort(context, code, exc.details() or code.name)

    async def UpsertDocument(
        self, request: UpsertDocumentRequest, context: Context
    ) -> UpsertDocumentResponse:
        return await self._forward(
            context, self._stub.UpsertDocument, request, self._settings.upsert_timeout_s
        )

    async def DeleteDocument(
        self, request: DeleteDocumentRequest, context: Context
    ) -> DeleteDocumentResponse:
        return await self._forward(
            context, self._stub.DeleteDocument, request, self._settings.timeout_s
        )

    async def ListDocuments(
        self, request: ListDocumentsRequest, context: Context
    ) -> ListDocumentsResponse:
        return await self._forward(
            context, self._stub.ListDocuments, request, self._settings.timeout_s
        )

    async def SearchKnowledge(
        self, request: SearchKnowledgeRequest, context: Context
    ) -> SearchKnowledgeResponse:
        return await self._forward(
            context, self._stub.SearchKnowledge, request, self._settings.timeout_s
        )


def add_knowledge_service(
    server: grpc.aio.Server, authenticator: TenantAuthenticator
) -> KnowledgeForwarder:
    """Serve KnowledgeService on `server`; close the returned forwarder at shutdown."""
    forwarder = KnowledgeForwarder(authenticator, KnowledgeClientSettings())
    knowledge_pb2_grpc.add_KnowledgeServiceServicer_to_server(forwarder, server)
    return forwarder
