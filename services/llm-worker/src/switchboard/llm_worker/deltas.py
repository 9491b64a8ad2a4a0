"""Relaying generated text to the client: deltas coalesced into few events (`Coalescer`),
redacted as they stream, and numbered in order on the task's reply channel."""

import asyncio
from collections.abc import Awaitable, Callable

from switchboard.common.redaction import StreamingRedactor
from switchboard.v1.chat_pb2 import ChatEvent, Delta
from switchboard.v1.events_pb2 import LlmTask

ReplySink = Callable[[ChatEvent], Awaitable[None]]


class Coalescer:
    """Decides when buffered deltas go out: at once until some text was sent, then when
    `window_s` passed since the last send or `max_chars` are waiting. Pure: the caller
    supplies the time and says when text went out (`sent`), as a guardrail may hold back
    what was drained."""

    def __init__(self, window_s: float, max_chars: int) -> None:
        self._window_s = window_s
        self._max_chars = max_chars
        self._pending: list[str] = []
        self._pending_chars = 0
        self._last_sent: float | None = None

    def add(self, text: str, now: float) -> bool:
        """Buffer a delta; True when the buffer should be sent now."""
        self._pending.append(text)
        self._pending_chars += len(text)
        return self._last_sent is None or now - self._last_sent >= self._window_s or self.full

    def deadline(self) -> float | None:
        """When the buffered text must go out at the latest; None when nothing waits."""
        if not self._pending:
            return None
        return (self._last_sent or 0.0) + self._window_s

    @property
    def full(self) -> bool:
        """`max_chars` or more are buffered."""
        return self._pending_chars >= self._max_chars

    def drain(self) -> str:
        """Everything buffered."""
        text = "".join(self._pending)
        self._pending.clear()
        self._pending_chars = 0
        return text

    def sent(self, now: float) -> None:
        """Text went out to the client at `now`: the window starts again."""
        self._last_sent = now


class ReplyChannel:
    """The reply events of one task: sequenced, sent one at a time in order."""

    def __init__(self, task: LlmTask, send: ReplySink, first_sequence: int) -> None:
        self._task = task
        self._send = send
        self.lock = asyncio.Lock()
        self.last_sequence = first_sequence

    async def emit(self, event: ChatEvent) -> None:
        """Send `event` after every event emitted before it."""
        async with self.lock:
            await self.emit_locked(event)

    async def emit_locked(self, event: ChatEvent) -> None:
        """`emit` for a caller that holds `lock`."""
        if not self._task.reply_topic:
            return
        self.last_sequence += 1
        event.request_id = self._task.request_id
        event.sequence = self.last_sequence
        await self._send(event)


class DeltaRelay:
    """Coalesces one attempt's text deltas into reply events.

    Until some text went out, each delta is sent at once, in line. After that, sends run in
    the background, one at a time: the stream keeps being read while a send is in flight,
    and what arrives meanwhile joins the next event. So a busy worker (whose sends wait on
    the broker) sends fewer, larger events instead of one per token, and an idle one still
    sends every `window_s`. A timer sends buffered text when the window closes, so text never
    waits on the next delta of a provider that stalls. Until the coalescer is full, text waits
    behind a send in flight; then `add` waits for it (back-pressure on the provider's stream).
    """

    def __init__(
        self,
        channel: ReplyChannel,
        coalescer: Coalescer,
        redactor: StreamingRedactor | None = None,
    ) -> None:
        self._channel = channel
        self._coalescer = coalescer
        # Output guardrail: PII and secrets never reach the client. Redacting the coalesced
        # chunks rather than each token keeps its cost per event, not per token.
        self._redactor = redactor
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self.sent = False

    async def add(self, text: str) -> None:
        """Take one delta; it goes out now, with the next send, or when the window closes."""
        self._raise_flush_error()
        due = self._coalescer.add(text, self._loop.time())
        if not self.sent:
            # The first visible text goes out in line: nothing is quicker.
            async with self._channel.lock:
                await self._send_locked()
            return
        flushing = self._send_in_flight()
        if flushing is not None:
            if not self._coalescer.full:
                return  # joins the next event, sent once this one is done
            await asyncio.wait([flushing])
            self._raise_flush_error()
            due = True
        if due:
            self._start_flush()
        elif self._timer is None:
            self._arm_timer()

    async def flush(self) -> None:
        """Send what is buffered now."""
        await self._settle()
        async with self._channel.lock:
            await self._send_locked(final=True)

    async def discard(self) -> None:
        """Drop what is buffered (the attempt failed)."""
        await self._settle()
        self._coalescer.drain()

    def close(self) -> None:
        """Stop the timer and a send in flight (the generation ended or was cancelled)."""
        self._cancel_timer()
        if (flushing := self._send_in_flight()) is not None:
            flushing.cancel()

    def _send_in_flight(self) -> asyncio.Task[None] | None:
        flushing = self._flushing
        return flushing if flushing is not None and not flushing.done() else None

    async def _settle(self) -> None:
        # A send that ends may arm the timer again (text came in meanwhile): loop until
        # neither is left.
        while True:
            self._cancel_timer()
            flushing = self._flushing
            if flushing is None:
                break
            await asyncio.wait([flushing])
            if self._flushing is flushing:
                self._flushing = None
        self._raise_flush_error()

    def _raise_flush_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm_timer(self) -> None:
        deadline = self._coalescer.deadline()
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._send_in_flight() is None:
            self._start_flush()
        # else: the send in flight arms the timer again when it is done

    def _start_flush(self) -> None:
        self._cancel_timer()
        self._flushing = asyncio.create_task(self._flush_in_background())

    async def _flush_in_background(self) -> None:
        try:
            async with self._channel.lock:
                await self._send_locked()
        except Exception as exc:  # raised to the generation at its next step
            self._error = exc
            return
        if self._timer is None:
            self._arm_timer()  # for what arrived while this send was in flight

    async def _send_locked(self, final: bool = False) -> None:
        now = self._loop.time()
        text = self._coalescer.drain()
        if self._redactor is not None:
            text = self._redactor.push(text) if text else ""
            if final:
                text += self._redactor.flush()
        if text:
            # Only text the client gets starts the window: the redactor holds back the word
            # being written, and a first delta it held must not wait a window for the next.
            self._coalescer.sent(now)
            await self._channel.emit_locked(ChatEvent(delta=Delta(text=text)))
            self.sent = True
