"""The chat client end to end against an in-process fake ChatService (grpc.aio)."""

import asyncio
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest
from grpc import aio

from switchboard.chat_cli.client import main, run
from switchboard.chat_cli.settings import ChatCliSettings
from switchboard.v1 import chat_pb2, chat_pb2_grpc

API_KEY = "test-key"


@dataclass
class Seen:
    request: chat_pb2.ChatRequest
    authorization: str


@dataclass
class FakeChat(chat_pb2_grpc.ChatServiceServicer):
    """Replies "echo: <message>"; a message naming a behaviour triggers it instead."""

    seen: list[Seen] = field(default_factory=list)
    conversations: int = 0

    async def Chat(
        self, request: chat_pb2.ChatRequest, context: aio.ServicerContext
    ) -> AsyncIterator[chat_pb2.ChatEvent]:
        metadata = dict(context.invocation_metadata() or ())
        self.seen.append(Seen(request, str(metadata.get("authorization", ""))))
        if metadata.get("authorization") != f"Bearer {API_KEY}":
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid API key")
        if request.message == "limited":
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "over the rate limit",
                trailing_metadata=(("retry-after-ms", "2500"),),
            )
        if request.message == "abort":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "message is not allowed")
        conversation_id = request.conversation_id
        if not conversation_id:
            self.conversations += 1
            conversation_id = f"conv-{self.conversations}"
        sequence = 0

        def event(**kwargs: object) -> chat_pb2.ChatEvent:
            nonlocal sequence
            sequence += 1
            return chat_pb2.ChatEvent(request_id="req", sequence=sequence, **kwargs)  # type: ignore[arg-type]

        yield event(started=chat_pb2.Started(conversation_id=conversation_id, request_id="req"))
        if request.message == "fail":
            yield event(error=chat_pb2.Error(code="UNAVAILABLE", message="no provider answered"))
            return
        if request.message == "truncate":
            yield event(delta=chat_pb2.Delta(text="cut"))
            return
        for word in ("echo: ", request.message):
            yield event(delta=chat_pb2.Delta(text=word))
        yield event(done=chat_pb2.Done(model="sim", tier=request.options.tier or "cheap"))
        if request.message == "linger":
            await asyncio.sleep(30)  # a server that does not close after done


@pytest.fixture
async def server() -> AsyncIterator[tuple[FakeChat, str]]:
    fake = FakeChat()  # type: ignore[abstract]  # the other RPCs stay UNIMPLEMENTED
    srv = aio.server()
    chat_pb2_grpc.add_ChatServiceServicer_to_server(fake, srv)
    port = srv.add_insecure_port("127.0.0.1:0")
    await srv.start()
    try:
        yield fake, f"127.0.0.1:{port}"
    finally:
        await srv.stop(grace=None)


def settings(target: str, **kwargs: object) -> ChatCliSettings:
    values: dict[str, object] = {"target": target, "api_key": API_KEY, "timeout_s": 10.0}
    values.update(kwargs)
    return ChatCliSettings(**values)  # type: ignore[arg-type]


async def chat(
    cfg: ChatCliSettings, text: str, *, interactive: bool = False
) -> tuple[int, str, str]:
    """Run the client in a thread (it owns its event loop) with `text` as stdin."""
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(run, cfg, io.StringIO(text), out, err, interactive=interactive)
    return code, out.getvalue(), err.getvalue()


async def test_two_lines_two_replies_one_conversation(server: tuple[FakeChat, str]) -> None:
    fake, target = server
    code, out, err = await chat(settings(target, tier="frontier"), "hello\n\n  \nworld\n")
    assert (code, out, err) == (0, "echo: hello\necho: world\n", "")
    assert [s.request.message for s in fake.seen] == ["hello", "world"]
    assert [s.request.conversation_id for s in fake.seen] == ["", "conv-1"]
    assert {s.authorization for s in fake.seen} == {f"Bearer {API_KEY}"}
    assert {s.request.user_id for s in fake.seen} == {"cli-user"}
    assert {s.request.options.tier for s in fake.seen} == {"frontier"}


async def test_error_event_gives_exit_code_1_and_goes_on(server: tuple[FakeChat, str]) -> None:
    fake, target = server
    code, out, err = await chat(settings(target), "fail\nafter\n")
    assert code == 1
    assert out == "echo: after\n"
    assert err == "error: UNAVAILABLE: no provider answered\n"
    # The conversation started by the failed message goes on.
    assert [s.request.conversation_id for s in fake.seen] == ["", "conv-1"]


async def test_unauthenticated_is_reported_on_stderr(server: tuple[FakeChat, str]) -> None:
    _, target = server
    code, out, err = await chat(settings(target, api_key="wrong"), "hello\n")
    assert code == 1
    assert out == ""
    assert err == "error: UNAUTHENTICATED: invalid API key\n"


async def test_status_error_then_next_line_still_sent(server: tuple[FakeChat, str]) -> None:
    fake, target = server
    code, out, err = await chat(settings(target), "abort\nok\n")
    assert code == 1
    assert out == "echo: ok\n"
    assert err == "error: INVALID_ARGUMENT: message is not allowed\n"
    assert [s.request.message for s in fake.seen] == ["abort", "ok"]


async def test_a_rate_limit_shows_when_to_retry(server: tuple[FakeChat, str]) -> None:
    _, target = server
    code, out, err = await chat(settings(target), "limited\n")
    assert (code, out) == (1, "")
    assert err == "error: RESOURCE_EXHAUSTED: over the rate limit (retry in 2.5s)\n"


async def test_stream_ending_without_done_is_an_error(server: tuple[FakeChat, str]) -> None:
    _, target = server
    code, out, err = await chat(settings(target), "truncate\n")
    assert code == 1
    assert out == "cut\n"
    assert err.startswith("error: UNKNOWN: ")


async def test_done_ends_the_reply_even_if_the_stream_stays_open(
    server: tuple[FakeChat, str],
) -> None:
    _, target = server
    code, out, _ = await asyncio.wait_for(chat(settings(target), "linger\nnext\n"), 10)
    assert (code, out) == (0, "echo: linger\necho: next\n")


async def test_quit_stops_reading(server: tuple[FakeChat, str]) -> None:
    fake, target = server
    code, out, _ = await chat(settings(target), "one\n/quit\ntwo\n")
    assert (code, out) == (0, "echo: one\n")
    assert len(fake.seen) == 1


async def test_unreachable_gateway(unused_tcp_port: int) -> None:
    code, out, err = await chat(settings(f"127.0.0.1:{unused_tcp_port}"), "hello\n")
    assert (code, out) == (1, "")
    assert err.startswith("error: UNAVAILABLE: ")


async def test_interactive_prompts_and_ignores_errors_in_exit_code(
    server: tuple[FakeChat, str],
) -> None:
    _, target = server
    code, out, err = await chat(settings(target, banner=False), "hi\nfail\n", interactive=True)
    assert code == 0
    assert out.startswith("you> bot> echo: hi\n  cheap · sim · 0 in / 0 out tokens · $0.000000")
    assert out.endswith("you> you> \n")
    assert err == "error: UNAVAILABLE: no provider answered\n"


async def test_interactive_chat_opens_with_the_banner_and_knows_its_commands(
    server: tuple[FakeChat, str],
) -> None:
    fake, target = server
    typed = "/help\n1\n/tier frontier\nagain\n/tier gold\n/new\nfresh\n"
    code, out, _ = await chat(settings(target), typed, interactive=True)
    assert code == 0
    assert f"gRPC       {target}" in out and "Try:\n  1. Where is my order A12345?" in out
    assert "/tier auto|cheap|frontier" in out, "/help lists the commands"
    assert "[suggestion 1: Where is my order A12345?]\n" in out
    assert "[usage: /tier auto|cheap|frontier; now frontier]" in out
    sent = [
        (s.request.message, s.request.options.tier, s.request.conversation_id) for s in fake.seen
    ]
    assert sent == [
        ("Where is my order A12345?", "", ""),
        ("again", "frontier", "conv-1"),
        ("fresh", "frontier", ""),
    ], "commands never reach the gateway; /new starts a new conversation"


async def test_piped_input_stays_plain_replies_only(server: tuple[FakeChat, str]) -> None:
    _, target = server
    code, out, _ = await chat(settings(target), "hi\n1\n")
    assert (code, out) == (0, "echo: hi\necho: 1\n"), "no banner, no footer, no shortcuts"


def test_api_key_from_the_dev_key_or_the_chat_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SWITCHBOARD_CHAT_API_KEY", "SWITCHBOARD_DEV_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert ChatCliSettings().api_key == "sb-dev-key"
    monkeypatch.setenv("SWITCHBOARD_DEV_API_KEY", "dev")
    assert ChatCliSettings().api_key == "dev"
    monkeypatch.setenv("SWITCHBOARD_CHAT_API_KEY", "chat")
    assert ChatCliSettings().api_key == "chat"
    monkeypatch.setenv("SWITCHBOARD_CHAT_TIMEOUT_S", "5")
    monkeypatch.setenv("SWITCHBOARD_CHAT_TARGET", "gw:1")
    cfg = ChatCliSettings()
    assert (cfg.timeout_s, cfg.target, cfg.tier, cfg.user_id) == (5.0, "gw:1", "", "cli-user")


def test_main_rejects_arguments_and_bad_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--help"]) == 0
    assert main(["extra"]) == 2
    monkeypatch.setenv("SWITCHBOARD_CHAT_TIMEOUT_S", "-1")
    assert main([]) == 2
    assert "invalid settings" in capsys.readouterr().err
