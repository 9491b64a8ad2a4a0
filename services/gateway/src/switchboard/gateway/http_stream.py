"""Streamed replies over HTTP when a generation restarts, and keepalives (decision 0031).

SSE is append-only, so for a client that only concatenates `choices[0].delta.content` (or
the Responses API's `response.output_text.delta`) `TextGate` sends text only while what the
client has is a prefix of the final text:

- **provisional** answers (the orchestrator's `provisional` event: the cascade may re-run a
  cheap answer on frontier once it has ended) are held from their first text until the
  verdict (`done`, a `tool` event or the cascade's `reset`), at most `hold_max_s` and
  `hold_max_chars`; a cascade then drops text the client never saw;
- after a **failure reset** (a worker redelivery, a provider retry or fallback) the retry's
  text that repeats what the client already has is swallowed, and what goes beyond it is sent;
- a retry that **diverges** from what was sent cannot be unsaid: the rest is held to the end
  and the stream fails with `reply_diverged`, carrying the final text (never a wrong text);
- a **replayed** reply (a retry with the `Idempotency-Key` of a finished one) is held whole.

Clients that declare they handle the `reset` extension (`sb-resets: client`, or
`stream_options.switchboard_resets`) get every delta at once and the `reset` events.
`EventStream` writes the events in order and a `: keepalive` comment after a silence.
"""

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from switchboard.gateway.http_common import sse
from switchboard.gateway.openai_shapes import Reply, invalid
from switchboard.v1.chat_pb2 import ChatEvent

RESETS_HEADER = "sb-resets"
KEEPALIVE = b": keepalive\n\n"
DIVERGED = "reply_diverged"


@dataclass(frozen=True)
class StreamOptions:
    """Bounds of a streamed reply (GatewaySettings `http_sse_keepalive_s`, `http_hold_*`)."""

    keepalive_s: float = 15.0
    hold_max_s: float = 20.0
    hold_max_chars: int = 32_768


def client_handles_resets(request: web.Request, declared: str) -> bool:
    """Whether the client handles `reset` itself: the body's declaration, else the header."""
    value = declared or request.headers.get(RESETS_HEADER, "edge").strip().lower()
    if value not in ("client", "edge"):
        raise invalid(RESETS_HEADER, f"the {RESETS_HEADER} header must be 'client' or 'edge'")
    return value == "client"


def diverged_message(reply: Reply) -> str:
    """Why a stream failed with `reply_diverged`, and how to get the final text."""
    return (
        "the reply restarted after a failure and its new text differs from the text already "
        "streamed, which cannot be taken back; the final text is in this error's "
        "switchboard.content, and a retry with the header "
        f"Idempotency-Key: {reply.request_id} replays the reply whole"
    )


def diverged_error(reply: Reply) -> bytes:
    """The Chat Completions stream's last event when the text diverged (no `[DONE]`)."""
    return sse(
        {
            "error": {
                "message": diverged_message(reply),
                "type": "server_error",
                "code": DIVERGED,
                "param": None,
                "switchboard": {**reply.extension(), "content": reply.text},
            }
        }
    )


class TextGate:
    """Which text of a reply a client may be sent now; see the module docstring. Feed it every
    event after `Reply.apply`; what `after` returns is the text to send."""

    def __init__(
        self,
        reply: Reply,
        options: StreamOptions,
        *,
        client_handles_resets: bool = False,
        hold_whole: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reply = reply
        self._options = options
        self._passthrough = client_handles_resets
        self._hold_whole = hold_whole and not client_handles_resets
        self._clock = clock
        self.sent = ""  # what the client has: always a prefix of some attempt's text
        self._in_sync = True  # `sent` is the reply's text: the next delta can go at once
        self._provisional = False
        self._hold_gave_out = False
        self.held_since: float | None = None

    @property
    def holding(self) -> bool:
        """Whether text is held back now (the answer is provisional, or held whole)."""
        return self._hold_whole or self._provisional

    @property
    def hold_deadline(self) -> float | None:
        """When the hold of a provisional answer gives out (None: nothing held)."""
        if not self._provisional or self.held_since is None:
            return None
        return self.held_since + self._options.hold_max_s

    @property
    def diverged(self) -> bool:
        """Whether the client has text that is not a prefix of the reply's text (so far)."""
        return not self._reply.text.startswith(self.sent)

    def after(self, event: ChatEvent) -> str:
        """The text to send now that `event` was applied to the reply ("" for none)."""
        kind = event.WhichOneof("event")
        if self._passthrough:
            return event.delta.text if kind == "delta" else ""
        if kind == "provisional":
            # Once a hold gave out the client has the text: holding again would not help.
            self._provisional = not self._hold_gave_out
        elif kind == "delta":
            if self.holding:
                self._in_sync = False
                if self.held_since is None:
                    self.held_since = self._clock()
                if self._provisional and len(self._reply.text) > self._options.hold_max_chars:
                    return self.give_out()
                return ""
            if self._in_sync:
                self.sent += event.delta.text
                return event.delta.text
        elif kind in ("tool", "done", "error") or (
            kind == "reset" and event.reset.cause == "cascade"
        ):
            # The verdict: a tool round or `done` keeps the answer, the cascade replaces it.
            self._provisional = False
            self.held_since = None
            if kind == "done":
                self._hold_whole = False
            elif kind == "error":
                return ""  # the reply failed: what is held is no answer
        return self._catch_up()

    def give_out(self) -> str:
        """The hold lasted its bound: send what is held and stream on."""
        self._provisional = False
        self._hold_gave_out = True
        self.held_since = None
        return self._catch_up()

    def _catch_up(self) -> str:
        """What extends the client's text to the reply's, when it is a prefix of it."""
        if self.holding:
            return ""
        text = self._reply.text
        if len(text) >= len(self.sent) and text.startswith(self.sent):
            rest = text[len(self.sent) :]
            self.sent = text
            self._in_sync = True
            return rest
        # Behind (a retry repeating what was sent) or diverged: wait for more.
        self._in_sync = False
        return ""


class EventStream:
    """An open SSE response: writes in order, a keepalive comment after `keepalive_s` of
    silence, and a call at a deadline (the end of a hold) whose bytes it writes; that call
    must move or clear the deadline."""

    def __init__(
        self,
        response: web.StreamResponse,
        keepalive_s: float,
        deadline: Callable[[], float | None] = lambda: None,
        at_deadline: Callable[[], bytes] = lambda: b"",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._response = response
        self._keepalive_s = keepalive_s
        self._deadline = deadline
        self._at_deadline = at_deadline
        self._clock = clock
        # Held by every write, so that the timer's writes and the reply's never interleave
        # with the state they were rendered from.
        self._lock = asyncio.Lock()
        self._last_write = clock()
        self._wake = asyncio.Event()
        self._timer = asyncio.create_task(self._tick(), name="sse-keepalive")

    async def send(self, render: Callable[[], bytes]) -> None:
        """Render and write, in order with the timer's writes."""
        async with self._lock:
            data = render()
            if data:
                await self._response.write(data)
                self._last_write = self._clock()

    def poke(self) -> None:
        """The deadline changed: recompute when to wake."""
        self._wake.set()

    async def _tick(self) -> None:
        while True:
            now = self._clock()
            due = self._last_write + self._keepalive_s
            deadline = self._deadline()
            if deadline is not None:
                due = min(due, deadline)
            self._wake.clear()
            if due > now:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                # that comes with the wake-up, and the timer would outlive its stream.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(due - now):
                        await self._wake.wait()
                continue  # woken early, or on time: look again
            if deadline is not None and now >= deadline:
                await self.send(self._at_deadline)
            else:
                await self.send(lambda: KEEPALIVE)

    async def close(self) -> None:
        """Stop the timer (the reply ended, or its client left: a failed write ends it too)."""
        self._timer.cancel()
        await asyncio.gather(self._timer, return_exceptions=True)
