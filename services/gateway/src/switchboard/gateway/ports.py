"""What `ChatCore` publishes to and locks with, as small protocols (Kafka and Redis in
production, fakes in unit tests; adapters.py has the real ones), and their errors."""

from collections.abc import Awaitable, Callable
from typing import Protocol

from switchboard.v1.events_pb2 import CancelGeneration, TurnRequest


class TurnPublisher(Protocol):
    """Where accepted turns and cancellations go (Kafka in production)."""

    async def publish_turn(self, turn: TurnRequest) -> None: ...

    async def publish_cancel(self, cancel: CancelGeneration) -> None: ...


class HeldLock(Protocol):
    """A conversation lock held by one request."""

    async def release(self) -> None:
        """Free the conversation; releasing twice is harmless."""
        ...


class ConversationLocks(Protocol):
    """One generation per conversation at a time (Redis in production)."""

    async def acquire(
        self, tenant_id: str, conversation_id: str, request_id: str
    ) -> HeldLock | None: ...


class BackendUnavailableError(Exception):
    """Kafka or Redis could not be reached in time."""


class PublishOutcomeUnknownError(BackendUnavailableError):
    """A turn was handed to Kafka but its acknowledgement did not come in time: it may or
    may not have been stored. A retry with the same request id is safe either way (the
    orchestrator and memory are idempotent by request id); one with a new id is not."""


# Called once a call is admitted, before its first event, with how: "new", "attached" (a
# retry following a running request) or "replayed" (a retry of a finished one).
OnAdmitted = Callable[[str], Awaitable[None]]
# The seconds left of the caller's deadline (None: no deadline).
TimeRemaining = Callable[[], float | None]
