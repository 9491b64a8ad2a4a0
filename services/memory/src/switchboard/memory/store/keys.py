"""The ids of memory's documents: derived from the ids they belong to, so that the per-turn
path reads and writes by exact `_id` (all FerretDB 1.x hands to SQLite)."""

import json
from typing import Any

Document = dict[str, Any]


def conversation_scope(tenant_id: str, conversation_id: str) -> Document:
    """The filter of every document of one conversation (the tenant is always in it)."""
    return {"tenant_id": tenant_id, "conversation_id": conversation_id}


def _derived_id(*parts: str | int) -> str:
    # A JSON array: unambiguous whatever the ids contain.
    return json.dumps(parts, separators=(",", ":"))


def conversation_key(tenant_id: str, conversation_id: str) -> str:
    """The `_id` of a conversation document (the tenant is part of it)."""
    return _derived_id(tenant_id, conversation_id)


def message_key(tenant_id: str, conversation_id: str, request_id: str, role: int) -> str:
    """The `_id` of a message document: one per (tenant, conversation, request, role)."""
    return _derived_id(tenant_id, conversation_id, request_id, role)


def summary_key(tenant_id: str, conversation_id: str, version: int) -> str:
    """The `_id` of a summary version."""
    return _derived_id(tenant_id, conversation_id, version)
