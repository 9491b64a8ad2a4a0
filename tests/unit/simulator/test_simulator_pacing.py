"""Simulated latency: time to first token, delay between tokens, clients that go away."""

import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import aiohttp
import openai

from switchboard.simulator import RunningSimulator

StartSimulator = Callable[..., AbstractAsyncContextManager[RunningSimulator]]

# Lower bounds only: a loaded machine can be late, never early.
TTFT_MS = 40
DELAY_MS = 5
TOKENS = 8


async def test_tokens_arrive_on_the_configured_schedule(start_simulator: StartSimulator) -> None:
    async with (
        start_simulator(ttft_ms=TTFT_MS, token_delay_ms=DELAY_MS, reply_tokens=TOKENS) as sim,
        openai.AsyncOpenAI(base_url=sim.openai_base_url, api_key="k", max_retries=0) as client,
    ):
        started = time.monotonic()
        arrivals: list[float] = []
        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "any news on my case?"}], stream=True
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append(time.monotonic() - started)

        started = time.monotonic()
        await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "any news on my case?"}]
        )
        non_streamed = time.monotonic() - started

    tokens = len(arrivals)
    assert TOKENS - 3 <= tokens <= TOKENS  # whole words
    assert arrivals[0] >= TTFT_MS / 1000 * 0.9
    # From the start, not from the first token: a late first token must not shorten the rest.
    assert arrivals[-1] >= (TTFT_MS + DELAY_MS * (tokens - 1)) / 1000 * 0.9
    whole = (TTFT_MS + DELAY_MS * (tokens - 1)) / 1000
    assert non_streamed >= whole * 0.9


async def test_a_client_that_goes_away_ends_its_stream(start_simulator: StartSimulator) -> None:
    async with start_simulator(ttft_ms=0, token_delay_ms=200, reply_tokens=40) as sim:
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{sim.openai_base_url}/chat/completions",
                json={
                    "model": "m",
                    "messages": [{"role": "user", "content": "any news on my case?"}],
                    "stream": True,
                },
                headers={"Authorization": "Bearer k"},
            ) as response:
                first = await response.content.readline()
                assert first.startswith(b"data: ")
            # Leaving the block closes the connection mid-stream (8 s of tokens left).
            async with session.get(f"{sim.base_url}/_health") as health:
                assert health.status == 200
        closing = time.monotonic()
    # The abandoned generation was cancelled, so shutdown did not wait for it.
    assert time.monotonic() - closing < 2
