"""The records the memory core works with, free of MongoDB and protobuf plumbing."""

from dataclasses import dataclass, field
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from switchboard.v1.chat_pb2 import ROLE_ASSISTANT, ROLE_USER, Message
from switchboard.v1.events_pb2 import CompletedTurn
from switchboard.v1.memory_pb2 import Fact

# Both messages of a turn share the turn's acceptance time (the gateway's clock), so a
# message's place in its conversation is that time in microseconds, then the role
# (user 2 before assistant 3). Derived from the turn alone, it is the same on every
# redelivery: no counter to keep consistent, and turns sort in the order they were accepted.
ROLE_SLOTS = 10


def position_of(accepted_at: Timestamp, role: int) -> int:
    """The sortable place of a message in its conversation."""
    micros = accepted_at.seconds * 1_000_000 + accepted_at.nanos // 1_000
    return micros * ROLE_SLOTS + role


@dataclass(frozen=True)
class StoredMessage:
    """One stored message."""

    position: int
    request_id: str
    role: int
    text: str
    created_at: datetime
    model: str = ""

    def to_proto(self) -> Message:
        """The public form of the message."""
        message = Message(
            role=self.role,  # type: ignore[arg-type]
            text=self.text,
            model=self.model,
            request_id=self.request_id,
        )
        message.created_at.FromDatetime(self.created_at)
        return message


@dataclass(frozen=True)
class SummaryState:
    """The summary in use: its text and the last message it covers."""

    version: int = 0
    text: str = ""
    # Messages at or before this position are covered by the summary.
    until_position: int = 0
    # How many messages that is.
    covered_messages: int = 0


@dataclass(frozen=True)
class ContextSnapshot:
    """What a context is built from: summary, facts, the newest unsummarised messages."""

    summary: SummaryState = field(default_factory=SummaryState)
    facts: tuple[Fact, ...] = ()
    # Newest first.
    newest_first: tuple[StoredMessage, ...] = ()
    # False when unsummarised messages older than `newest_first` were left unread (only the
    # conversation's window of newest messages was read).
    complete: bool = True


def turn_problem(turn: CompletedTurn) -> str | None:
    """Why a completed turn cannot be stored, or None."""
    for name in ("tenant_id", "conversation_id", "request_id"):
        if not getattr(turn, name):
            return f"CompletedTurn.{name} is empty"
    if not turn.HasField("accepted_at") or not turn.HasField("completed_at"):
        return "CompletedTurn.accepted_at and completed_at are required"
    return None


def messages_of(turn: CompletedTurn) -> tuple[StoredMessage, StoredMessage]:
    """The user and the assistant message of a completed turn."""
    return (
        StoredMessage(
            position=position_of(turn.accepted_at, ROLE_USER),
            request_id=turn.request_id,
            role=ROLE_USER,
            text=turn.user_message,
            created_at=turn.accepted_at.ToDatetime(tzinfo=UTC),
        ),
        StoredMessage(
            position=position_of(turn.accepted_at, ROLE_ASSISTANT),
            request_id=turn.request_id,
            role=ROLE_ASSISTANT,
            text=turn.assistant_message,
            created_at=turn.completed_at.ToDatetime(tzinfo=UTC),
            model=turn.model,
        ),
    )
