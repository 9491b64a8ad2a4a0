"""Turns the events of a reply stream into text on a terminal or a pipe (no I/O besides that)."""

from typing import TextIO

from switchboard.v1 import chat_pb2

_DIM = "\x1b[2m"
_RESET = "\x1b[0m"


class Renderer:
    """Writes replies to `out` and errors to `err`, one reply at a time.

    `prompts` prefixes each reply with "bot> " (interactive mode); `styled` dims status lines
    and adds a footer with model, tier, tokens and cost after each reply (a terminal).
    """

    def __init__(self, out: TextIO, err: TextIO, *, prompts: bool, styled: bool) -> None:
        self._out = out
        self._err = err
        self._prompts = prompts
        self._styled = styled
        self._line_open = False  # the last character written to `out` is not a newline
        self._prefix_pending = prompts
        self._text_written = False

    def begin(self) -> None:
        """Start a new reply."""
        self._prefix_pending = self._prompts
        self._text_written = False

    def render(self, event: chat_pb2.ChatEvent) -> None:
        """Print what the event means for the reader; `started` and unknown events print nothing."""
        kind = event.WhichOneof("event")
        if kind == "delta":
            self._text(event.delta.text)
        elif kind == "tool":
            self._status(f"[tool {event.tool.name}: {event.tool.status}]")
        elif kind == "reset":
            self._status(f"[reply restarted: {event.reset.reason or 'no reason given'}]")
            self._text_written = False
        elif kind == "handoff":
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
        if self._styled:
            self._out.write(f"{_DIM}  {footer(done)}{_RESET}\n")
        self._out.flush()

    def _end_line(self) -> None:
        if self._line_open:
            self._out.write("\n")
            self._line_open = False


def footer(done: chat_pb2.Done) -> str:
    """One line about a finished reply: model, tier, tokens, cost."""
    usage = done.usage
    parts = [p for p in (done.model, done.tier) if p]
    parts.append(f"{usage.input_tokens} in / {usage.output_tokens} out tokens")
    parts.append(f"${done.cost_usd:.6f}")
    if done.finish_reason and done.finish_reason != "stop":
        parts.append(f"finish: {done.finish_reason}")
    return " · ".join(parts)
