"""The renderer: what each ChatEvent prints, on a pipe and on a terminal."""

import io

from switchboard.chat_cli.render import Renderer, footer
from switchboard.v1 import chat_pb2


def started() -> chat_pb2.ChatEvent:
    return chat_pb2.ChatEvent(
        sequence=0, started=chat_pb2.Started(conversation_id="c-1", request_id="r-1")
    )


def delta(text: str) -> chat_pb2.ChatEvent:
    return chat_pb2.ChatEvent(delta=chat_pb2.Delta(text=text))


def done(**kwargs: object) -> chat_pb2.ChatEvent:
    return chat_pb2.ChatEvent(done=chat_pb2.Done(**kwargs))  # type: ignore[arg-type]


class Clock:
    """A clock that moves 25 ms each time it is read."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        self.now += 0.025
        return self.now


def render(
    events: list[chat_pb2.ChatEvent], *, prompts: bool = False, styled: bool = False
) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    renderer = Renderer(out, err, prompts=prompts, styled=styled, clock=Clock())
    renderer.begin()
    for event in events:
        renderer.render(event)
    return out.getvalue(), err.getvalue()


def test_piped_reply_is_the_text_and_a_newline() -> None:
    out, err = render([started(), delta("Hel"), delta("lo"), delta(""), delta("!"), done()])
    assert out == "Hello!\n"
    assert err == ""


def test_reply_ending_in_a_newline_gets_no_second_one() -> None:
    out, _ = render([delta("one\ntwo\n"), done()])
    assert out == "one\ntwo\n"


def test_empty_reply_is_an_empty_line() -> None:
    out, _ = render([started(), done()])
    assert out == "\n"


def test_prompted_reply_starts_with_bot() -> None:
    out, _ = render([started(), delta("Hi"), done()], prompts=True)
    assert out == "bot> Hi\n  no model ran · 0 in / 0 out tokens · $0.000000 · first token 25 ms\n"


def test_reset_prints_a_marker_on_its_own_line() -> None:
    reset = chat_pb2.ChatEvent(reset=chat_pb2.Reset(reason="provider failed"))
    out, _ = render([delta("Partial"), reset, delta("Full"), done()])
    assert out == "Partial\n[reply restarted: provider failed]\nFull\n"


def test_tool_and_handoff_lines_and_bot_prefix_after_them() -> None:
    events = [
        chat_pb2.ChatEvent(tool=chat_pb2.ToolStatus(name="lookup_order", status="running")),
        chat_pb2.ChatEvent(tool=chat_pb2.ToolStatus(name="lookup_order", status="succeeded")),
        delta("Shipped."),
        chat_pb2.ChatEvent(handoff=chat_pb2.Handoff(reason="asked for a human", ticket_id="T-9")),
        done(),
    ]
    out, _ = render(events, prompts=True)
    assert out == (
        "[tool lookup_order: running]\n"
        "[tool lookup_order: succeeded]\n"
        "bot> Shipped.\n"
        "[handed off to a human: asked for a human (ticket T-9)]\n"
        "  no model ran · 0 in / 0 out tokens · $0.000000 · first token 25 ms\n"
    )


def test_error_event_goes_to_stderr_after_closing_the_line() -> None:
    error = chat_pb2.ChatEvent(error=chat_pb2.Error(code="UNAVAILABLE", message="no provider"))
    out, err = render([delta("Half"), error])
    assert out == "Half\n"
    assert err == "error: UNAVAILABLE: no provider\n"


def test_error_without_code() -> None:
    _, err = render([chat_pb2.ChatEvent(error=chat_pb2.Error(message="boom"))])
    assert err == "error: UNKNOWN: boom\n"


def test_styled_output_dims_status_and_adds_a_footer() -> None:
    events = [
        chat_pb2.ChatEvent(tool=chat_pb2.ToolStatus(name="t", status="failed")),
        delta("Hi"),
        done(
            model="gpt-4o-mini",
            tier="cheap",
            finish_reason="stop",
            usage=chat_pb2.Usage(input_tokens=12, output_tokens=3),
            cost_usd=0.000123,
        ),
    ]
    out, _ = render(events, prompts=True, styled=True)
    assert out == (
        "\x1b[2m[tool t: failed]\x1b[0m\n"
        "bot> Hi\n"
        "\x1b[2m  cheap · gpt-4o-mini · 12 in / 3 out tokens · $0.000123 · first token 25 ms"
        "\x1b[0m\n"
    )


def test_unstyled_output_has_no_escape_codes_and_a_plain_footer() -> None:
    out, _ = render([delta("Hi"), done(model="m", tier="cheap")], prompts=True)
    assert "\x1b" not in out
    assert out == "bot> Hi\n  cheap · m · 0 in / 0 out tokens · $0.000000 · first token 25 ms\n"


def test_piped_output_is_the_replies_only_even_on_a_terminal() -> None:
    events = [
        chat_pb2.ChatEvent(tool=chat_pb2.ToolStatus(name="lookup_order", status="running")),
        chat_pb2.ChatEvent(tool=chat_pb2.ToolStatus(name="lookup_order", status="succeeded")),
        delta("Shipped."),
        chat_pb2.ChatEvent(handoff=chat_pb2.Handoff(reason="asked for a human", ticket_id="T-9")),
        done(model="m", tier="cheap"),
    ]
    out, _ = render(events, prompts=False, styled=True)
    assert out == "Shipped.\n"


def test_footer_says_when_the_token_limit_cut_the_reply_and_skips_empty_fields() -> None:
    text = footer(chat_pb2.Done(finish_reason="length", cost_usd=0.5))
    assert text == (
        "no model ran · 0 in / 0 out tokens · $0.500000 · finish: length (cut at the token limit)"
    )
    assert footer(chat_pb2.Done(finish_reason="max_tokens")).endswith(
        "finish: max_tokens (cut at the token limit)"
    )
    assert "finish" not in footer(chat_pb2.Done(finish_reason="end_turn"))
    assert footer(chat_pb2.Done(), 0.0831).endswith("· first token 83 ms")


def test_renderer_is_reusable_across_replies() -> None:
    out, err = io.StringIO(), io.StringIO()
    renderer = Renderer(out, err, prompts=True, styled=False, clock=Clock())
    for text in ("one", "two"):
        renderer.begin()
        renderer.render(delta(text))
        renderer.render(done())
    tail = "  no model ran · 0 in / 0 out tokens · $0.000000 · first token 25 ms\n"
    assert out.getvalue() == f"bot> one\n{tail}bot> two\n{tail}"


def test_citations_are_listed_after_the_reply_on_a_terminal_only() -> None:
    citation = chat_pb2.Citation(document_id="r.md", title="Returns", source_url="https://x/r")
    events = [started(), delta("Within 30 days."), done(citations=[citation])]
    out, _ = render(events, prompts=True)
    assert out.startswith("bot> Within 30 days.\n  sources: Returns <https://x/r>\n  ")
    piped, _ = render(events)
    assert piped == "Within 30 days.\n", "piped output is the replies only"
