"""Checks a ChatRequest before anything is published; each problem names its field."""

from dataclasses import dataclass

from switchboard.v1.chat_pb2 import ChatRequest

VALID_TIERS = ("", "auto", "cheap", "frontier")
MAX_ID_CHARS = 128


@dataclass(frozen=True)
class ChatLimits:
    """The bounds a ChatRequest must respect."""

    max_message_chars: int
    max_user_id_chars: int
    max_metadata_entries: int
    max_output_tokens: int


def _id_problem(field: str, value: str) -> str | None:
    if len(value) > MAX_ID_CHARS:
        return f"{field} is longer than {MAX_ID_CHARS} characters"
    if value and not all(c.isalnum() or c in "-_.:" for c in value):
        return f"{field} may hold only letters, digits and - _ . :"
    return None


def chat_request_problem(request: ChatRequest, limits: ChatLimits) -> str | None:
    """The first thing wrong with `request`, or None when it may be accepted."""
    if not request.message.strip():
        return "message must not be blank"
    if len(request.message) > limits.max_message_chars:
        return (
            f"message has {len(request.message)} characters; "
            f"the limit is {limits.max_message_chars}"
        )
    if len(request.user_id) > limits.max_user_id_chars:
        return f"user_id is longer than {limits.max_user_id_chars} characters"
    for field in ("conversation_id", "request_id"):
        problem = _id_problem(field, getattr(request, field))
        if problem:
            return problem
    options = request.options
    if options.tier not in VALID_TIERS:
        return f"options.tier must be one of auto, cheap, frontier; got {options.tier!r}"
    if options.max_output_tokens > limits.max_output_tokens:
        return f"options.max_output_tokens must be at most {limits.max_output_tokens}"
    if options.HasField("temperature") and not 0.0 <= options.temperature <= 2.0:
        return "options.temperature must be between 0 and 2"
    if len(options.metadata) > limits.max_metadata_entries:
        return f"options.metadata has more than {limits.max_metadata_entries} entries"
    return None
