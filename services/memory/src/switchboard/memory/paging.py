"""Opaque page tokens for `ListConversations` (keyset paging: newest activity first).

A token is the sort key of the last conversation of a page (its last activity, to the
millisecond as MongoDB keeps it, and its id) plus the user filter it was issued for, as
URL-safe base64 JSON validated by pydantic. It carries no secret: every query is scoped by
the caller's tenant anyway, so a forged token can at worst skip conversations of one's own.
"""

import base64
import binascii
import json
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ValidationError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class InvalidPageTokenError(ValueError):
    """A page token that this service did not issue, or for another query."""


class PageToken(BaseModel):
    """Where the next page starts."""

    # Last activity of the previous page's last conversation, in ms since the epoch.
    updated_ms: int
    conversation_id: str
    user_id: str

    @property
    def updated_at(self) -> datetime:
        """The last activity as a datetime."""
        # Integer arithmetic: a float round trip could land a microsecond early.
        return EPOCH + timedelta(milliseconds=self.updated_ms)

    @classmethod
    def after(cls, updated_at: datetime, conversation_id: str, user_id: str) -> "PageToken":
        """The token of the page that follows this conversation."""
        return cls(
            updated_ms=(updated_at - EPOCH) // timedelta(milliseconds=1),
            conversation_id=conversation_id,
            user_id=user_id,
        )

    def encode(self) -> str:
        """The opaque form handed to clients."""
        raw = self.model_dump_json().encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str, user_id: str) -> "PageToken":
        """Parse a token handed back by a client for a query on `user_id`."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            parsed = cls.model_validate(json.loads(raw))
        except (binascii.Error, ValueError, ValidationError) as exc:
            raise InvalidPageTokenError("page_token is not a token this service issued") from exc
        if parsed.user_id != user_id:
            raise InvalidPageTokenError("page_token belongs to a listing of another user_id")
        return parsed
