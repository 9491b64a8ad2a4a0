"""Deterministic replies and token accounting (pure functions, no server)."""

import pytest

from switchboard.simulator.replies import (
    count_prompt_tokens,
    count_tokens,
    encode,
    excerpt,
    generate_reply,
)


def test_same_input_same_reply_byte_for_byte() -> None:
    first = generate_reply("m", "Where is my parcel?", reply_tokens=40)
    again = generate_reply("m", "Where is my parcel?", reply_tokens=40)

    assert first == again
    assert first.text.encode() == again.text.encode()
    assert generate_reply("other", "Where is my parcel?", reply_tokens=40).text != first.text
    assert generate_reply("m", "Where is my invoice?", reply_tokens=40).text != first.text


@pytest.mark.parametrize("reply_tokens", [1, 2, 7, 40, 333, 2000])
def test_a_reply_has_about_the_configured_length_in_tokens(reply_tokens: int) -> None:
    reply = generate_reply("m", "Can you help me with my bill?", reply_tokens=reply_tokens)

    assert reply.completion_tokens == len(encode(reply.text))
    # Whole words only: a word that would cross the budget is left out.
    assert reply_tokens - 3 <= reply.completion_tokens <= reply_tokens
    assert "".join(reply.pieces) == reply.text
    assert len(reply.pieces) == reply.completion_tokens
    assert not reply.truncated
    assert reply.text == reply.text.strip()


def test_a_reply_quotes_the_start_of_the_message() -> None:
    reply = generate_reply("m", "My   router\nkeeps rebooting every night", reply_tokens=60)

    assert '"My router keeps rebooting every night".' in reply.text


def test_max_tokens_cuts_the_reply_to_its_first_tokens() -> None:
    full = generate_reply("m", "Where is my parcel?", reply_tokens=40)
    cut = generate_reply("m", "Where is my parcel?", reply_tokens=40, max_tokens=9)

    assert cut.truncated
    assert cut.completion_tokens == 9
    assert cut.pieces == full.pieces[:9]
    assert full.text.startswith(cut.text)
    assert generate_reply("m", "Where is my parcel?", reply_tokens=40, max_tokens=40) == full


def test_characters_split_across_tokens_are_streamed_whole() -> None:
    # "👋" is two tokens in o200k_base: its bytes are split between them.
    assert len(encode(" 👋")) == 2
    reply = generate_reply("m", "👋👋👋 café naïve", reply_tokens=40)

    assert "👋👋👋 café naïve" in reply.text
    assert "".join(reply.pieces) == reply.text
    assert "\ufffd" not in reply.text
    assert len(reply.pieces) < reply.completion_tokens


def test_a_limit_inside_a_character_drops_the_partial_character() -> None:
    full = generate_reply("m", "👋", reply_tokens=40)
    cuts = [
        generate_reply("m", "👋", reply_tokens=40, max_tokens=n)
        for n in range(1, full.completion_tokens)
    ]
    # A cut after the first of the two tokens of "👋" holds its bytes back for good.
    inside = [cut for cut in cuts if len(cut.pieces) < cut.completion_tokens]

    assert inside
    for cut in inside:
        assert "\ufffd" not in cut.text
        assert full.text.startswith(cut.text)


def test_lone_surrogates_in_the_prompt_do_not_break_the_reply() -> None:
    reply = generate_reply("m", "broken \ud800 text", reply_tokens=40)

    reply.text.encode("utf-8")  # would raise on a lone surrogate


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("", ""),
        ("   \n\t ", ""),
        ("Hello!", "Hello"),
        ('He said "stop"', "He said 'stop'"),
        (
            "one two three four five six seven eight nine ten",
            "one two three four five six seven eight...",
        ),
        ("x" * 100, "x" * 60 + "..."),
    ],
)
def test_excerpt(text: str, quoted: str) -> None:
    assert excerpt(text) == quoted


def test_prompt_tokens_add_framing_per_message() -> None:
    assert count_tokens("") == 0
    assert count_prompt_tokens([]) == 3
    assert count_prompt_tokens([["user", "hello"]]) == 3 + 3 + count_tokens("user") + 1
    assert (
        count_prompt_tokens([["user", "hi"]], named=1) == count_prompt_tokens([["user", "hi"]]) + 1
    )
    # Special-token markup in user text counts as plain text instead of failing.
    assert count_tokens("<|endoftext|>") > 1
