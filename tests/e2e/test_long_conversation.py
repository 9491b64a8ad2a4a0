"""Done-when of the memory issue: a 40-turn conversation through the whole platform sends
a summary plus a recent window instead of its whole history."""

import json
import urllib.request
from functools import partial
from typing import Any

import grpc
import pytest

from switchboard.conversation.tokens import count_tokens
from switchboard.v1.chat_pb2 import ChatOptions, ChatRequest
from switchboard.v1.chat_pb2_grpc import ChatServiceStub

from .conftest import Platform
from .markers import word_marker
from .memory_support import Mongo, eventually, stored

pytestmark = pytest.mark.e2e
TURNS = 40
# How far behind the newest turn memory may be when turn 40 is sent back to back.
MAX_TURNS_BEHIND = 10
SUMMARY_MARK = "Summary of the conversation so far:"


def journal(platform: Platform) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{platform.simulator_url}/_journal", timeout=5) as response:
        entries: list[dict[str, Any]] = json.load(response)["requests"]
        return entries


def message(n: int, marker: str) -> str:
    if n == 1:
        return f"[{marker}] Hello, my name is Dana Reyes and my order 4242 never arrived."
    # Neutral wording: repeated complaints would (rightly) trigger a human handoff.
    return (
        f"[{marker}] Turn {n}: could you tell me which delivery options exist for item {n} of "
        "the catalogue, how long each of them usually takes to my region, and whether gift "
        "wrapping can be added to the parcel before it leaves the warehouse?"
    )


async def test_turn_forty_sends_summary_and_recent_window_not_the_whole_history(
    platform: Platform, mongo: Mongo
) -> None:
    marker = word_marker()
    metadata = [("authorization", f"Bearer {platform.api_key}")]
    sent: list[str] = []
    conversation = ""
    async with grpc.aio.insecure_channel(platform.gateway_target) as channel:
        chat = ChatServiceStub(channel)
        for n in range(1, TURNS + 1):
            if n == TURNS:
                # The steady state is under test, not a race with Kafka: on a loaded machine
                # memory may still be storing (and summarising) the turns a fast client sent.
                await stored(mongo, platform.database, "demo", conversation, 2 * (TURNS - 1))
                scope = {"tenant_id": "demo", "conversation_id": conversation}
                await eventually(
                    partial(mongo[platform.database]["conversations"].find_one, scope),
                    lambda doc: bool(doc and doc.get("summary") and not doc.get("summary_pending")),
                    timeout_s=30,
                )
            # Pinned to cheap: this test is about memory, and reads OpenAI-format prompts.
            request = ChatRequest(
                conversation_id=conversation,
                message=message(n, marker),
                user_id="dana",
                options=ChatOptions(tier="cheap"),
            )
            events = [e async for e in chat.Chat(request, metadata=metadata, timeout=60)]
            assert events[-1].WhichOneof("event") == "done", (n, events[-1])
            conversation = events[0].started.conversation_id
            sent.append(message(n, marker))
            reply = "".join(e.delta.text for e in events if e.WhichOneof("event") == "delta")
            sent.append(reply)
            last_done = events[-1].done
    docs = await stored(mongo, platform.database, "demo", conversation, 2 * TURNS)
    lags = sorted(
        (d["stored_at"] - d["created_at"]).total_seconds() for d in docs if d["role"] == 3
    )
    print(f"\ncompleted-to-stored lag: median {lags[len(lags) // 2]:.3f}s, max {lags[-1]:.3f}s")

    prompts = [
        entry["body"]["messages"]
        for entry in journal(platform)
        if entry["api"] == "openai"
        and entry["body"]["messages"][-1]["content"].startswith(f"[{marker}] Turn {TURNS}:")
    ]
    assert len(prompts) == 1
    prompt = prompts[0]
    history = prompt[1:-1]
    summaries = [m for m in history if m["role"] == "system" and SUMMARY_MARK in m["content"]]
    window = [m for m in history if m["role"] != "system"]
    assert len(summaries) == 1, "turn 40 carries the rolling summary"
    assert message(1, marker) not in [m["content"] for m in window], "turn 1 is summarised"
    assert 0 < len(window) < 2 * (TURNS - 1), "a recent window, not the whole history"
    # The window is the newest history memory had, verbatim, in order, without gaps. The
    # client sends each message the instant the previous reply is done, while that turn is
    # still on its way to memory through Kafka: on a loaded machine the last few turns may
    # not have arrived yet (see the completed-to-stored lag printed above).
    contents = [m["content"] for m in window]
    history_sent = sent[:-2]
    behind = [
        lag
        for lag in range(0, 2 * MAX_TURNS_BEHIND + 1, 2)
        if contents
        == history_sent[len(history_sent) - lag - len(contents) : len(history_sent) - lag]
    ]
    labels = [c[10:18] if c.startswith("[") else "reply" for c in contents]
    assert behind, f"the window is a contiguous run of the newest messages: {labels}"
    print(f"window ends {behind[0] // 2} turn(s) before turn {TURNS - 1}")
    full_history_tokens = sum(count_tokens(text) for text in sent[:-2])
    window_tokens = sum(count_tokens(m["content"]) for m in window)
    summary_tokens = count_tokens(summaries[0]["content"])
    assert summary_tokens + window_tokens < full_history_tokens
    assert last_done.usage.input_tokens < full_history_tokens
    print(
        f"\nturn {TURNS}: prompt {last_done.usage.input_tokens} input tokens "
        f"(summary {summary_tokens} + window {window_tokens} of {len(window)} messages); "
        f"the full history alone is {full_history_tokens} tokens"
    )
