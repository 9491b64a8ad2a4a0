"""Turns the events of a reply stream into text on a terminal or a pipe (no I/O besides that)."""

import time
from collections.abc import Callable
from typing import TextIO

from switchboard.v1 import chat_pb2

_DIM = "\x1b[2m"
_RESET = "\x1b[0m"


class Renderer:
    """Writes replies to `out` and errors to `err`, one reply at a time.

    `prompts` (interactive mode) prefixes each reply with "bot> " and ends it with a footer:
    tier, model, tokens, cost and time to first token. `styled` (a terminal) dims status
    lines and the footer. Piped mode prints the replies only (and a marker where a reply
    restarted, as its first text was already printed).
    """

    def __init__(
        self,
        out: TextIO,
        err: TextIO,
        *,
        prompts: bool,
        styled: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._out = out
        self._err = err
        self._prompts = prompts
        self._styled = styled
        self._clock = clock
        self._line_open = False  # the last character written to `out` is not a newline
        self._prefix_pending = prompts
        self._text_written = False
        self._sent_at = 0.0
        self._first_text_s: float | None = None

    def begin(self) -> None:
        """Start a new reply (the message is being sent now)."""
        self._prefix_pending = self._prompts
        self._text_written = False
        self._sent_at = self._clock()
        self._first_text_s = None

    def note(self, line: str) -> None:
        """A line of the client's own (banner, help, command answers), dim on a terminal."""
        self._end_line()
        for part in line.splitlines():
            self._out.write(f"{_DIM}{part}{_RESET}\n" if self._styled else f"{part}\n")
        self._out.flush()

    def render(self, event: chat_pb2.ChatEvent) -> None:
        """Print what the event means for the reader; `started` and unknown events print nothing."""
        kind = event.WhichOneof("event")
        if kind == "delta":
            self._text(event.delta.text)
        elif kind == "tool":
            # Progress, not part of the reply: piped output keeps one reply per message.
            if self._prompts:
                self._status(f"[tool {event.tool.name}: {event.tool.status}]")
        elif kind == "reset":
            self._status(f"[reply restarted: {event.reset.reason or 'no reason given'}]")
            self._text_written = False
        elif kind == "handoff" and self._prompts:  # the reply's text names the ticket
            ticket = f" (ticket {event.handoff.ticket_id})" if event.handoff.ticket_id else ""
            self._status(f"[handed off to a human: {event.handoff.reason}{ticket}]")
        elif kind == "done":
            self._done(event.done)
        elif kind == "error":
            self.error(event.error.code or "UNKNOWN", event.error.message)

    def error(self, code: str, message: str) -> None:
        """Report a failed reply on `err` as "error: CODE: message"."""
        self._end_line()
        self._out.flush()
        self._err.write(f"error: {code}: {message}\n")
        self._err.flush()

    def interrupted(self) -> None:
        """The reader gave up on the reply (Ctrl-C)."""
        self._status("[interrupted]")

    def _text(self, text: str) -> None:
        if not text:
            return
        if self._first_text_s is None:
            self._first_text_s = self._clock() - self._sent_at
        if self._prefix_pending:
            self._out.write("bot> ")
            self._prefix_pending = False
        self._out.write(text)
        self._out.flush()
        self._line_open = not text.endswith("\n")
        self._text_written = True

    def _status(self, line: str) -> None:
        self._end_line()
        self._out.write(f"{_DIM}{line}{_RESET}\n" if self._styled else f"{line}\n")
        self._out.flush()
        self._prefix_pending = self._prompts

    def _done(self, done: chat_pb2.Done) -> None:
        if not self._text_written:
            # An empty reply still gets its (empty) line, so that replies stay one per line.
            if self._prefix_pending:
                self._out.write("bot> ")
            self._line_open = True
        self._end_line()
        if self._prompts:
            if done.citations:
                # The knowledge-base documents the answer is grounded in.
                sources = "; ".join(
                    f"{c.title or c.document_id}{f' <{c.source_url}>' if c.source_url else ''}"
                    for c in done.citations
                )
                self._out.write(
                    f"{_DIM}  sources: {sources}{_RESET}\n"
                    if self._styled
                    else f"  sources: {sources}\n"
                )
            line = footer(done, self._first_text_s)
            self._out.write(f"{_DIM}  {line}{_RESET}\n" if self._styled else f"  {line}\n")
        self._out.flush()

    def _end_line(self) -> None:
        if self._line_open:
            self._out.write("\n")
            self._line_open = False


def footer(done: chat_pb2.Done, first_text_s: float | None = None) -> str:
    """One line about a finished reply: tier, model, tokens, cost, time to first token."""
    usage = done.usage
    parts = [p for p in (done.tier, done.model) if p] or ["no model ran"]
    parts.append(f"{usage.input_tokens} in / {usage.output_tokens} out tokens")
    parts.append(f"${done.cost_usd:.6f}")
    if first_text_s is not None:
        parts.append(f"first token {first_text_s * 1000:.0f} ms")
    if done.finish_reason and done.finish_reason not in ("stop", "end_turn"):
        parts.append(f"finish: {_FINISH.get(done.finish_reason, done.finish_reason)}")
    return " · ".join(parts)


# Finish reasons that deserve words: a reply cut by the token limit must say so.
_FINISH = {
    "length": "length (cut at the token limit)",
    "max_tokens": "max_tokens (cut at the token limit)",
    "handoff": "handoff",
    "blocked": "blocked",
}
