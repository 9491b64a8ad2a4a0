"""How the pipeline says no: `Refused` (the gRPC status it means and a message naming the
problem, which each door renders in its own shape), and terminal `error` events."""

import grpc

from switchboard.gateway.quotas import Refusal
from switchboard.v1.chat_pb2 import ChatEvent, Error


class Refused(Exception):
    """A call the pipeline will not serve: the gRPC status it means, and a message naming the
    problem. `refusal` is set for RESOURCE_EXHAUSTED (it carries the retry delay)."""

    def __init__(self, code: grpc.StatusCode, message: str, refusal: Refusal | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.refusal = refusal


def error_event(request_id: str, sequence: int, code: str, message: str) -> ChatEvent:
    """A terminal `error` event."""
    return ChatEvent(
        request_id=request_id, sequence=sequence, error=Error(code=code, message=message)
    )


def owner_gone(request_id: str) -> str:
    """Why a request whose owning gateway stopped cannot be followed."""
    return (
        f"the gateway that accepted request {request_id} stopped before its reply finished; "
        "the reply cannot be resumed. Read the conversation to see whether the turn was "
        "stored, or send the message again with a new request_id"
    )
