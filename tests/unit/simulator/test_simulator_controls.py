"""Per-request controls: reply length, latency and injected faults, from metadata or headers."""

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiohttp
import anthropic
import httpx2
import openai
import pytest

from switchboard.simulator import RunningSimulator
from switchboard.simulator.controls import AttemptCounter

StartSimulator = Callable[..., AbstractAsyncContextManager[RunningSimulator]]
HI: list[Any] = [{"role": "user", "content": "hi there, where is my parcel?"}]


def entries(sim: RunningSimulator) -> list[dict[str, Any]]:
    return [dict(e) for e in sim.state.journal.entries()]


async def wait_for_outcome(sim: RunningSimulator, index: int = -1) -> dict[str, Any]:
    """The journal entry once its request ended (bounded wait)."""
    for _ in range(200):
        entry = entries(sim)[index]
        if "outcome" in entry:
            return entry
        await asyncio.sleep(0.01)
    raise AssertionError(f"request never ended: {entries(sim)[index]}")


async def test_reply_length_from_body_metadata_or_headers(
    fresh_sim: RunningSimulator,
    openai_client: openai.AsyncOpenAI,
    anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    short = await openai_client.chat.completions.create(
        model="m", messages=HI, extra_body={"metadata": {"sim.tokens": "5"}}
    )
    assert short.usage is not None and 1 <= short.usage.completion_tokens <= 5
    longer = await anthropic_client.messages.create(
        model="m", max_tokens=500, messages=HI, extra_headers={"x-sim-tokens": "90"}
    )
    assert 85 <= longer.usage.output_tokens <= 90
    # A header wins over the body.
    both = await openai_client.chat.completions.create(
        model="m",
        messages=HI,
        extra_body={"metadata": {"sim.tokens": "5"}},
        extra_headers={"x-sim-tokens": "60"},
    )
    assert both.usage is not None and both.usage.completion_tokens > 5


async def test_latency_controls_slow_one_request_only(
    sim: RunningSimulator, openai_client: openai.AsyncOpenAI
) -> None:
    started = time.monotonic()
    stream = await openai_client.chat.completions.create(
        model="m",
        messages=HI,
        stream=True,
        extra_headers={"x-sim-ttft-ms": "150", "x-sim-delay-ms": "20", "x-sim-tokens": "6"},
    )
    first = None
    async for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.monotonic() - started
    total = time.monotonic() - started
    # Lower bounds only: a loaded machine can be late, never early.
    assert first is not None and first >= 0.15 * 0.9
    assert total >= (0.15 + 0.02 * 4) * 0.9


async def test_429_carries_retry_after_and_500_is_a_server_error(
    fresh_sim: RunningSimulator,
    openai_client: openai.AsyncOpenAI,
    anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    with pytest.raises(openai.RateLimitError) as limited:
        await openai_client.chat.completions.create(
            model="m",
            messages=HI,
            extra_body={"metadata": {"sim.fault": "429", "sim.retry_after_ms": "1500"}},
        )
    assert limited.value.response.headers["retry-after-ms"] == "1500"
    assert limited.value.response.headers["retry-after"] == "2"
    assert limited.value.code == "rate_limit_exceeded"
    with pytest.raises(anthropic.RateLimitError) as anthropic_limited:
        await anthropic_client.messages.create(
            model="m", max_tokens=50, messages=HI, extra_headers={"x-sim-fault": "429"}
        )
    assert "retry-after" not in anthropic_limited.value.response.headers
    with pytest.raises(anthropic.InternalServerError):
        await anthropic_client.messages.create(
            model="m", max_tokens=50, messages=HI, extra_headers={"x-sim-fault": "500"}
        )
    with pytest.raises(openai.InternalServerError):
        await openai_client.chat.completions.create(
            model="m", messages=HI, extra_headers={"x-sim-fault": "500"}
        )
    assert [(e["outcome"], e["fault"]) for e in entries(fresh_sim)] == [
        ("error 429", "429"),
        ("error 429", "429"),
        ("error 500", "500"),
        ("error 500", "500"),
    ]


async def test_a_fault_can_hit_only_the_first_attempts_of_a_key(
    fresh_sim: RunningSimulator, openai_client: openai.AsyncOpenAI
) -> None:
    controls = {"x-sim-fault": "500", "x-sim-fault-attempts": "2", "x-sim-key": "req-42"}
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            await openai_client.chat.completions.create(
                model="m", messages=HI, extra_headers=controls
            )
    third = await openai_client.chat.completions.create(
        model="other-model", messages=HI, extra_headers=controls
    )
    assert third.choices[0].finish_reason == "stop"
    # Another key starts its own count.
    with pytest.raises(openai.InternalServerError):
        await openai_client.chat.completions.create(
            model="m", messages=HI, extra_headers={**controls, "x-sim-key": "req-43"}
        )
    assert [e["attempt"] for e in entries(fresh_sim)] == [1, 2, 3, 1]


async def test_without_a_key_attempts_are_counted_per_conversation(
    fresh_sim: RunningSimulator, anthropic_client: anthropic.AsyncAnthropic
) -> None:
    controls = {"x-sim-fault": "429", "x-sim-fault-attempts": "1"}
    messages: list[Any] = [{"role": "user", "content": "a conversation of its own 8812"}]
    with pytest.raises(anthropic.RateLimitError):
        await anthropic_client.messages.create(
            model="a", max_tokens=20, messages=messages, extra_headers=controls
        )
    retried = await anthropic_client.messages.create(
        model="b", max_tokens=20, messages=messages, extra_headers=controls
    )
    assert retried.stop_reason in ("end_turn", "max_tokens")


@pytest.mark.parametrize("api", ["openai", "anthropic"])
async def test_disconnect_drops_the_stream_midway(
    fresh_sim: RunningSimulator,
    openai_client: openai.AsyncOpenAI,
    anthropic_client: anthropic.AsyncAnthropic,
    api: str,
) -> None:
    headers = {"x-sim-fault": "disconnect", "x-sim-fault-after": "3", "x-sim-tokens": "30"}
    received = ""
    # The OpenAI SDK wraps the broken stream; Anthropic's lets the HTTP client's error out.
    with pytest.raises((openai.APIConnectionError, httpx2.RemoteProtocolError)):
        if api == "openai":
            stream = await openai_client.chat.completions.create(
                model="m", messages=HI, stream=True, extra_headers=headers
            )
            async for chunk in stream:
                received += "".join(c.delta.content or "" for c in chunk.choices)
        else:
            async with anthropic_client.messages.stream(
                model="m", max_tokens=100, messages=HI, extra_headers=headers
            ) as astream:
                async for text in astream.text_stream:
                    received += text
    assert received, "some text arrived before the connection dropped"
    entry = await wait_for_outcome(fresh_sim)
    assert (entry["outcome"], entry["fault"], entry["tokens_sent"]) == (
        "fault_disconnect",
        "disconnect",
        3,
    )


async def test_hang_stalls_until_the_client_gives_up(
    fresh_sim: RunningSimulator, openai_client: openai.AsyncOpenAI
) -> None:
    received = 0
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            stream = await openai_client.chat.completions.create(
                model="m", messages=HI, stream=True, extra_headers={"x-sim-fault": "hang"}
            )
            async with stream:  # closes the connection when the timeout strikes
                async for chunk in stream:
                    received += sum(bool(c.delta.content) for c in chunk.choices)
    entry = await wait_for_outcome(fresh_sim)
    assert entry["fault"] == "hang" and entry["outcome"] == "client_disconnected"
    assert entry["tokens_sent"] == received > 0


async def test_a_client_that_leaves_is_journaled(
    fresh_sim: RunningSimulator, anthropic_client: anthropic.AsyncAnthropic
) -> None:
    async with anthropic_client.messages.stream(
        model="m", max_tokens=500, messages=HI, extra_headers={"x-sim-delay-ms": "50"}
    ) as stream:
        async for _ in stream.text_stream:
            break
    entry = await wait_for_outcome(fresh_sim)
    assert entry["outcome"] == "client_disconnected"
    assert 0 < entry["tokens_sent"] < 40


@pytest.mark.parametrize(
    ("controls", "names"),
    [
        ({"x-sim-fault": "teapot"}, "sim.fault"),
        ({"x-sim-tokens": "0"}, "sim.tokens"),
        ({"x-sim-delay-ms": "soon"}, "sim.delay_ms"),
        ({"x-sim-colour": "blue"}, "sim.colour"),
    ],
)
async def test_bad_controls_get_400_naming_them(
    sim: RunningSimulator, controls: dict[str, str], names: str
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{sim.openai_base_url}/chat/completions",
            json={"model": "m", "messages": HI},
            headers={"Authorization": "Bearer k", **controls},
        ) as response,
    ):
        assert response.status == 400
        assert names in (await response.json())["error"]["message"]


async def test_the_environment_gives_the_defaults(start_simulator: StartSimulator) -> None:
    async with (
        start_simulator(fault="500", fault_attempts=1) as sim,
        openai.AsyncOpenAI(base_url=sim.openai_base_url, api_key="k", max_retries=0) as client,
    ):
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model="m", messages=HI)
        ok = await client.chat.completions.create(model="m", messages=HI)
        assert ok.choices[0].message.content
        # A request can switch the default fault off.
        fresh: list[Any] = [{"role": "user", "content": "another one"}]
        quiet = await client.chat.completions.create(
            model="m", messages=fresh, extra_headers={"x-sim-fault": "none"}
        )
        assert quiet.choices[0].message.content


def test_the_attempt_counter_is_bounded() -> None:
    counter = AttemptCounter(size=2)
    assert [counter.next("a"), counter.next("a"), counter.next("b")] == [1, 2, 1]
    counter.next("c")  # evicts "a", the least recently used
    assert counter.next("a") == 1
