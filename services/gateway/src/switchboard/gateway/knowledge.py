"""`switchboard.v1.KnowledgeService` at the gateway: authenticate the API key, then forward
the call to the knowledge service with the tenant the key belongs to (`sb-tenant-id`).

The request body never names the tenant, so a caller reaches only its own documents.
Statuses from the knowledge service (INVALID_ARGUMENT, NOT_FOUND ...) reach the caller as
they are; an unreachable knowledge service is UNAVAILABLE. The HTTP door
(http_knowledge.py) uses the same forwarder, through `call`, with the tenant it authenticated.
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
    http_max_body_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="Largest body of an HTTP document upload (PUT/POST "
        "/v1/knowledge/documents; a PDF travels base64-encoded, a third larger); larger ones "
        "get 413. The knowledge service's own SWITCHBOARD_KNOWLEDGE_MAX_DOCUMENT_BYTES still "
        "applies to the document.",
    )


class KnowledgeCallError(Exception):
    """The knowledge service refused a call, or could not be reached (UNAVAILABLE)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


async def _abort(context: Context, code: grpc.StatusCode, message: str) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("unreachable")


class KnowledgeForwarder(knowledge_pb2_grpc.KnowledgeServiceServicer):
    """The public KnowledgeService: authenticate, then forward with the tenant."""

    def __init__(
        self, authenticator: TenantAuthenticator, settings: KnowledgeClientSettings
    ) -> None:
        self._authenticator = authenticator
        self.settings = settings
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

    async def call(
        self,
        tenant_id: str,
        call: Callable[..., Awaitable[R]],
        request: Message,
        timeout_s: float,
    ) -> R:
        """Call the knowledge service for `tenant_id` (an authenticated caller's tenant).

        Raises KnowledgeCallError with the service's status; an unreachable service is
        UNAVAILABLE."""
        try:
            return await call(request, metadata=((TENANT_METADATA, tenant_id),), timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN):
                log.warning("knowledge service unavailable: %s", exc.details())
                raise KnowledgeCallError(
                    grpc.StatusCode.UNAVAILABLE, "the knowledge service is unavailable"
                ) from exc
            raise KnowledgeCallError(code, exc.details() or code.name) from exc

    async def upsert_document(
        self, tenant_id: str, request: UpsertDocumentRequest
    ) -> UpsertDocumentResponse:
        """UpsertDocument for `tenant_id`; KnowledgeCallError when refused."""
        return await self.call(
            tenant_id, self._stub.UpsertDocument, request, self.settings.upsert_timeout_s
        )

    async def delete_document(
        self, tenant_id: str, request: DeleteDocumentRequest
    ) -> DeleteDocumentResponse:
        """DeleteDocument for `tenant_id`; KnowledgeCallError when refused."""
        return await self.call(
            tenant_id, self._stub.DeleteDocument, request, self.settings.timeout_s
        )

    async def list_documents(
        self, tenant_id: str, request: ListDocumentsRequest
    ) -> ListDocumentsResponse:
        """ListDocuments for `tenant_id`; KnowledgeCallError when refused."""
        return await self.call(
            tenant_id, self._stub.ListDocuments, request, self.settings.timeout_s
        )

    async def search(
        self, tenant_id: str, request: SearchKnowledgeRequest
    ) -> SearchKnowledgeResponse:
        """SearchKnowledge for `tenant_id`; KnowledgeCallError when refused."""
        return await self.call(
            tenant_id, self._stub.SearchKnowledge, request, self.settings.timeout_s
        )

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
            return await self.call(tenant.tenant_id, call, request, timeout_s)
        except KnowledgeCallError as exc:
            await _abort(context, exc.code, exc.message)

    async def UpsertDocument(
        self, request: UpsertDocumentRequest, context: Context
    ) -> UpsertDocumentResponse:
        return await self._forward(
            context, self._stub.UpsertDocument, request, self.settings.upsert_timeout_s
        )

    async def DeleteDocument(
        self, request: DeleteDocumentRequest, context: Context
    ) -> DeleteDocumentResponse:
        return await self._forward(
            context, self._stub.DeleteDocument, request, self.settings.timeout_s
        )

    async def ListDocuments(
        self, request: ListDocumentsRequest, context: Context
    ) -> ListDocumentsResponse:
        return await self._forward(
            context, self._stub.ListDocuments, request, self.settings.timeout_s
        )

    async def SearchKnowledge(
        self, request: SearchKnowledgeRequest, context: Context
    ) -> SearchKnowledgeResponse:
        return await self._forward(
            context, self._stub.SearchKnowledge, request, self.settings.timeout_s
        )


def add_knowledge_service(
    server: grpc.aio.Server, authenticator: TenantAuthenticator
) -> KnowledgeForwarder:
    """Serve KnowledgeService on `server`; close the returned forwarder at shutdown."""
    forwarder = KnowledgeForwarder(authenticator, KnowledgeClientSettings())
    knowledge_pb2_grpc.add_KnowledgeServiceServicer_to_server(forwarder, server)
    return forwarder
