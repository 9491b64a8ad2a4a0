"""Reading a server-sent event stream (OpenAI-compatible servers)."""

import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

# Lines read after `[DONE]` before a stream is let go (servers send none or a blank one).
SSE_DRAIN_MAX_LINES = 16


async def sse_data(lines: AsyncIterator[str]) -> AsyncGenerator[dict[str, Any], None]:
    """The JSON objects of a server-sent event stream's `data` fields, up to `[DONE]`.

    Written out because the SDK's own reader builds a pydantic model per chunk; this keeps
    to the SSE rules that OpenAI-compatible servers use (multi-line data, comments).
    """
    data: list[str] = []
    # A blank line ends an event; the stream's end ends the last one too (an empty line
    # appended, so one path reads both).
    stream = _then_blank(lines)
    async for line in stream:
        if line:
            if line.startswith("data:"):
                data.append(line[6:] if line.startswith("data: ") else line[5:])
            continue  # `event:`, `id:`, `retry:` and `:` comments carry nothing we use
        if not data:
            continue
        payload = "\n".join(data)
        data = []
        if payload.startswith("[DONE]"):
            # Read the body to its end (a few lines at most) so that the connection goes
            # back to the pool: httpx closes one whose body was left unread, and every
            # request then paid for a new TCP connection (50 of 50 in a test).
            drained = 0
            async for _ in stream:
                drained += 1
                if drained >= SSE_DRAIN_MAX_LINES:
                    break
            return
        chunk = json.loads(payload)
        if not isinstance(chunk, dict):
            raise ValueError(f"a data field is not a JSON object: {payload[:80]!r}")
        yield chunk


async def _then_blank(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    async for line in lines:
        yield line
    yield ""


def error_message(error: Any) -> str:
    """The message of an error object sent inside a stream."""
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) and message else "an error in the stream"
