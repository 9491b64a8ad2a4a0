"""Routes reply events from this instance's reply topic to the open client streams.

One Kafka consumer feeds every stream, so delivery never blocks: a stream whose buffer
is full is marked overflowed and ended, instead of stalling every other conversation.
"""

import asyncio
import enum
import logging
from collections.abc import AsyncIterator

from switchboard.v1.chat_pb2 import ChatEvent

log = logging.getLogger(__name__)


class Delivery(enum.Enum):
    """What became of one reply event."""

    DELIVERED = "delivered"
    DUPLICATE = "duplicate"
    ORPHANED = "orphaned"  # no open stream for its request: the client is gone
    OVERFLOW = "overflow"


class StreamOverflowError(Exception):
    """The client read too slowly and its buffer filled up."""


class ReplyTimeoutError(Exception):
    """No reply event arrived within the idle timeout."""


def is_terminal(event: ChatEvent) -> bool:
    """`done` and `error` end a reply."""
    return event.WhichOneof("event") in ("done", "error")


class ReplyStream:
    """The events of one request, de-duplicated by sequence, in a bounded buffer."""

    def __init__(self, request_id: str, max_buffered: int) -> None:
        self.request_id = request_id
        self._queue: asyncio.Queue[ChatEvent] = asyncio.Queue(maxsize=max_buffered)
        self._last_sequence = 0
        self._overflowed = asyncio.Event()

    def offer(self, event: ChatEvent) -> Delivery:
        """Buffer `event` unless it was seen already or the buffer is full."""
        if event.sequence <= self._last_sequence:
            if is_terminal(event):
                # Never expected: it would leave the client waiting (worth a look).
                log.warning(
                    "%s: dropped %s numbered %d, at or below the %d delivered",
                    self.request_id,
                    event.WhichOneof("event"),
                    event.sequence,
                    self._last_sequence,
                )
            return Delivery.DUPLICATE
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._overflowed.set()
            return Delivery.OVERFLOW
        self._last_sequence = event.sequence
        return Delivery.DELIVERED

    async def next(self, timeout_s: float) -> ChatEvent:
        """The next event; raises on overflow, or when none came within `timeout_s`."""
        if self._overflowed.is_set() and self._queue.empty():
            raise StreamOverflowError(self.request_id)
        try:
            return await asyncio.wait_for(self._queue.get(), timeout_s)
        except TimeoutError:
            raise ReplyTimeoutError(self.request_id) from None

    async def events(self, idle_timeout_s: float) -> AsyncIterator[ChatEvent]:
        """Yield events until a terminal one; raise on overflow or a silence too long."""
        while True:
            event = await self.next(idle_timeout_s)
            yield event
            if is_terminal(event):
                return


class ReplyRouter:
    """Open streams of this gateway instance, by tenant and request id (request ids are
    chosen by clients: two tenants may use the same one)."""

    def __init__(self, max_buffered_per_stream: int, max_open_streams: int = 10_000) -> None:
        self._max_buffered = max_buffered_per_stream
        self.max_open_streams = max_open_streams
        self._streams: dict[tuple[str, str], ReplyStream] = {}
        self._empty = asyncio.Event()
        self._empty.set()

    def open(self, tenant_id: str, request_id: str) -> ReplyStream:
        """Register a stream for the tenant's `request_id` before its request is published."""
        stream = ReplyStream(request_id, self._max_buffered)
        self._streams[(tenant_id, request_id)] = stream
        self._empty.clear()
        return stream

    def close(self, tenant_id: str, request_id: str) -> None:
        """Forget a finished or abandoned stream."""
        self._streams.pop((tenant_id, request_id), None)
        if not self._streams:
            self._empty.set()

    async def wait_until_empty(self) -> None:
        """Return when no stream is open (at once when none is)."""
        await self._empty.wait()

    def deliver(self, tenant_id: str, event: ChatEvent) -> Delivery:
        """Hand one event of the tenant's turn to its stream."""
        stream = self._streams.get((tenant_id, event.request_id))
        if stream is None:
            return Delivery.ORPHANED
        return stream.offer(event)

    @property
    def open_streams(self) -> int:
        """How many client streams are open."""
        return len(self._streams)

    @property
    def full(self) -> bool:
        """No new stream is admitted: each costs memory until its reply ends."""
        return len(self._streams) >= self.max_open_streams
