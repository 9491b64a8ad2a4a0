"""`switchboard.v1.KnowledgeService` over gRPC, for the gateway and the orchestrator.

The tenant comes from the `sb-tenant-id` metadata entry, which only the platform's own
services set (the gateway from the caller's API key). Statuses: bad input is
INVALID_ARGUMENT naming the problem (nothing is written then); a document the tenant does
not have is NOT_FOUND; MongoDB, Kafka or an embeddings endpoint out of reach is UNAVAILABLE.
"""

import logging
from typing import Any, NoReturn, TypeAlias

import grpc
from aiokafka.errors import KafkaError
from google.protobuf.timestamp_pb2 import Timestamp
from pymongo.errors import PyMongoError

from switchboard.embeddings import EmbeddingError
from switchboard.knowledge.documents import DocumentNotFoundError, KnowledgeBase
from switchboard.knowledge.ingest import DocumentError
from switchboard.v1 import knowledge_pb2_grpc
from switchboard.v1.knowledge_pb2 import (
    DeleteDocumentRequest,
    DeleteDocumentResponse,
    DocumentInfo,
    KnowledgeHit,
    ListDocumentsRequest,
    ListDocumentsResponse,
    SearchKnowledgeRequest,
    SearchKnowledgeResponse,
    UpsertDocumentRequest,
    UpsertDocumentResponse,
)

log = logging.getLogger(__name__)

TENANT_METADATA = "sb-tenant-id"
Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
UNAVAILABLE_ERRORS = (PyMongoError, KafkaError, EmbeddingError, TimeoutError)


async def _tenant(context: Context) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == TENANT_METADATA and isinstance(value, str) and value:
            return value
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"no {TENANT_METADATA} metadata")
    raise AssertionError("unreachable")


async def _unavailable(context: Context, exc: Exception) -> NoReturn:
    log.warning("knowledge call failed: %s", exc)
    await context.abort(grpc.StatusCode.UNAVAILABLE, f"a dependency is unavailable: {exc}")
    raise AssertionError("unreachable")


class KnowledgeService(knowledge_pb2_grpc.KnowledgeServiceServicer):
    """The four calls, each scoped to the caller's tenant."""

    def __init__(self, knowledge: KnowledgeBase) -> None:
        self._knowledge = knowledge

    async def UpsertDocument(
        self, request: UpsertDocumentRequest, context: Context
    ) -> UpsertDocumentResponse:
        tenant = await _tenant(context)
        if not request.HasField("document"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "document is required")
        try:
            outcome = await self._knowledge.upsert(tenant, request.document)
        except DocumentError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except UNAVAILABLE_ERRORS as exc:
            await _unavailable(context, exc)
        return UpsertDocumentResponse(
            document_id=outcome.document_id,
            chunks=outcome.chunks,
            version=outcome.version,
            unchanged=outcome.unchanged,
            redacted=list(outcome.redacted),
        )

    async def DeleteDocument(
        self, request: DeleteDocumentRequest, context: Context
    ) -> DeleteDocumentResponse:
        tenant = await _tenant(context)
        if not request.document_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "document_id is required")
        try:
            await self._knowledge.delete(tenant, request.document_id)
        except DocumentNotFoundError:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"no document {request.document_id[:128]!r}"
            )
        except UNAVAILABLE_ERRORS as exc:
            await _unavailable(context, exc)
        return DeleteDocumentResponse(document_id=request.document_id)

    async def ListDocuments(
        self, request: ListDocumentsRequest, context: Context
    ) -> ListDocumentsResponse:
        tenant = await _tenant(context)
        try:
            records, token = await self._knowledge.list(
                tenant, request.page_size, request.page_token
            )
        except DocumentError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except UNAVAILABLE_ERRORS as exc:
            await _unavailable(context, exc)
        documents = []
        for r in records:
            updated = Timestamp()
            updated.FromDatetime(r.updated_at)
            documents.append(
                DocumentInfo(
                    document_id=r.document_id,
                    title=r.title,
                    source_url=r.source_url,
                    content_type=r.content_type,
                    metadata=r.metadata,
                    chunks=r.chunks,
                    version=r.version,
                    updated_at=updated,
                )
            )
        return ListDocumentsResponse(documents=documents, next_page_token=token)

    async def SearchKnowledge(
        self, request: SearchKnowledgeRequest, context: Context
    ) -> SearchKnowledgeResponse:
        tenant = await _tenant(context)
        try:
            hits = await self._knowledge.search(
                tenant,
                request.query,
                request.top_k,
                given_vector=(request.query_embedding_model, list(request.query_embedding)),
            )
        except DocumentError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except UNAVAILABLE_ERRORS as exc:
            await _unavailable(context, exc)
        return SearchKnowledgeResponse(
            hits=[
                KnowledgeHit(
                    document_id=h.document_id,
                    title=h.title,
                    source_url=h.source_url,
                    snippet=h.snippet,
                    score=h.score,
                    similarity=h.similarity,
                    chunk_id=h.chunk_id,
                    text=h.text,
                    heading=h.heading,
                )
                for h in hits
            ]
        )
