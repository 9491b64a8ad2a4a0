"""The gRPC side of the chat client and the loop that reads messages."""

import asyncio
import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TextIO

from grpc import aio

from switchboard.v1 import chat_pb2, chat_pb2_grpc

from .banner import SUGGESTIONS, banner, help_text
from .render import Renderer
from .settings import ChatCliSettings

QUIT = "/quit"
TIERS = ("auto", "cheap", "frontier")


class ChatSession:
    """One conversation with the gateway: the id from the first `started` is reused."""

    def __init__(self, settings: ChatCliSettings) -> None:
        self._settings = settings
        # grpc.aio binds the channel to the running event loop: create the session inside it.
        self._channel = aio.insecure_channel(settings.target)
        self._stub = chat_pb2_grpc.ChatServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {settings.api_key}"),)
        self.conversation_id = ""
        self.tier = settings.tier

    async def send(self, message: str, renderer: Renderer) -> bool:
        """Send one message and render its reply; False when it ended in an error."""
        request = chat_pb2.ChatRequest(
            conversation_id=self.conversation_id,
            message=message,
            user_id=self._settings.user_id,
            options=chat_pb2.ChatOptions(tier=self.tier),
        )
        renderer.begin()
        call = self._stub.Chat(request, metadata=self._metadata, timeout=self._settings.timeout_s)
        try:
            async for item in call:
                event: chat_pb2.ChatEvent = item
                kind = event.WhichOneof("event")
                if kind == "started" and not self.conversation_id:
                    self.conversation_id = event.started.conversation_id
                renderer.render(event)
                if kind in ("done", "error"):
                    return kind == "done"
        except aio.AioRpcError as exc:
            renderer.error(exc.code().name, _with_retry_hint(exc))
            return False
        finally:
            # Stops the stream when we leave early (terminal event, Ctrl-C); no-op once ended.
            call.cancel()
        renderer.error("UNKNOWN", "the reply stream ended without done or error")
        return False

    async def close(self) -> None:
        await self._channel.close()


def _with_retry_hint(exc: aio.AioRpcError) -> str:
    """The status details, plus the gateway's `retry-after-ms` trailer when it sent one."""
    details = exc.details() or ""
    for key, value in exc.trailing_metadata() or ():
        if key == "retry-after-ms" and str(value).isdigit():
            return f"{details} (retry in {int(str(value)) / 1000:.1f}s)"
    return details


def _piped_lines(stdin: TextIO) -> Iterator[str]:
    for line in stdin:
        yield line.rstrip("\r\n")


def _prompted_lines(stdin: TextIO, stdout: TextIO) -> Iterator[str]:
    use_input = stdin is sys.stdin and stdout is sys.stdout
    if use_input:
        with contextlib.suppress(ImportError):  # not on every platform
            import readline  # noqa: F401  (line editing and history for input())
    while True:
        if use_input:
            try:
                line = input("you> ")
            except EOFError:
                stdout.write("\n")
                return
        else:
            stdout.write("you> ")
            stdout.flush()
            line = stdin.readline()
            if not line:
                stdout.write("\n")
                return
        yield line.rstrip("\r\n")


def run(
    settings: ChatCliSettings,
    stdin: TextIO,
    stdout: TextIO,
    stderr: TextIO,
    *,
    interactive: bool | None = None,
) -> int:
    """Chat until the end of input or /quit; the exit code.

    Interactive (stdin is a terminal): prompts, and Ctrl-C stops the current reply. Otherwise
    one message per line, replies only, and exit code 1 when any message ended in an error.
    """
    if interactive is None:
        interactive = stdin.isatty()
    styled = stdout.isatty() and not os.environ.get("NO_COLOR")
    renderer = Renderer(stdout, stderr, prompts=interactive, styled=styled)
    lines = _prompted_lines(stdin, stdout) if interactive else _piped_lines(stdin)
    failed = False
    # Lines are read outside the event loop so that Ctrl-C at the prompt is a plain
    # KeyboardInterrupt; inside runner.run() it cancels the reply being streamed.
    if interactive and settings.banner:
        renderer.note(banner(settings))
    with asyncio.Runner() as runner:
        session = runner.run(_open(settings))
        try:
            for line in lines:
                message = line.strip()
                if not message:
                    continue
                if message == QUIT:
                    break
                if interactive and message in _SHORTCUTS:
                    renderer.note(f"[suggestion {message}: {_SHORTCUTS[message]}]")
                    message = _SHORTCUTS[message]
                elif message.split()[0] in _COMMANDS:
                    _command(message, session, renderer)
                    continue
                try:
                    ok = runner.run(session.send(message, renderer))
                except KeyboardInterrupt:
                    if not interactive:
                        raise
                    renderer.interrupted()
                    continue
                failed = failed or not ok
        finally:
            runner.run(session.close())
    return 1 if failed and not interactive else 0


_SHORTCUTS = {str(n): s.message for n, s in enumerate(SUGGESTIONS, start=1)}
_COMMANDS = ("/help", "/new", "/tier")


def _command(line: str, session: ChatSession, renderer: Renderer) -> None:
    """Carry out one of the client's own commands (never sent to the gateway)."""
    name, *args = line.split()
    if name == "/help":
        renderer.note(help_text())
    elif name == "/new":
        session.conversation_id = ""
        renderer.note("[a new conversation starts with the next message]")
    elif len(args) == 1 and args[0] in TIERS:
        session.tier = "" if args[0] == "auto" else args[0]
        renderer.note(f"[tier: {args[0]}]")
    else:
        renderer.note(f"[usage: /tier {'|'.join(TIERS)}; now {session.tier or 'auto'}]")


async def _open(settings: ChatCliSettings) -> ChatSession:
    return ChatSession(settings)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m switchboard.chat_cli`, configured by environment variables."""
    args = sys.argv[1:] if argv is None else argv
    if args:
        sys.stderr.write(_USAGE)
        return 0 if args[0] in ("-h", "--help") else 2
    try:
        settings = ChatCliSettings()
    except ValueError as exc:  # pydantic's ValidationError
        sys.stderr.write(f"error: invalid settings: {exc}\n")
        return 2
    try:
        return run(settings, sys.stdin, sys.stdout, sys.stderr)
    except KeyboardInterrupt:
        sys.stdout.write("\n")
        return 130


_USAGE = """\
usage: python -m switchboard.chat_cli

Sends each line of stdin to the gateway as a chat message and streams the replies.
On a terminal it opens with a banner (what runs where, three messages to try), prompts,
and ends each reply with a line: tier, model, tokens, cost, time to first token; /help
lists the commands, /quit or Ctrl-D ends. Piped, it prints the replies only. Environment:
  SWITCHBOARD_CHAT_TARGET     gateway host:port (127.0.0.1:15051)
  SWITCHBOARD_CHAT_API_KEY    API key (else SWITCHBOARD_DEV_API_KEY, else sb-dev-key)
  SWITCHBOARD_CHAT_USER_ID    user id (cli-user)
  SWITCHBOARD_CHAT_TIER       auto, cheap or frontier (empty: auto)
  SWITCHBOARD_CHAT_TIMEOUT_S  deadline of one reply in seconds (120)
  SWITCHBOARD_CHAT_HTTP_URL   the gateway's HTTP edge, listed when it answers (http://127.0.0.1:15080)
  SWITCHBOARD_CHAT_BANNER     false: no banner
"""
