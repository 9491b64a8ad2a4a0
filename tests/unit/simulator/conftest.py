"""Fixtures: the simulator running in-process on a free port, and SDK clients pointed at it."""

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anthropic
import openai
import pytest

from switchboard.simulator import RunningSimulator, Settings, serve

API_KEY = "test"


def fast_settings(**overrides: Any) -> Settings:
    """Settings for tests: a free port and no simulated latency."""
    values: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "ttft_ms": 0, "token_delay_ms": 0}
    return Settings(**{**values, **overrides})


StartSimulator = Callable[..., AbstractAsyncContextManager[RunningSimulator]]


@pytest.fixture
def start_simulator() -> StartSimulator:
    """Start a separate simulator with `fast_settings(**overrides)`, as a context manager."""

    def start(**overrides: Any) -> AbstractAsyncContextManager[RunningSimulator]:
        return serve(fast_settings(**overrides))

    return start


@pytest.fixture(scope="session")
async def sim() -> AsyncIterator[RunningSimulator]:
    async with serve(fast_settings()) as running:
        yield running


@pytest.fixture
async def fresh_sim(sim: RunningSimulator) -> RunningSimulator:
    """The shared simulator with an empty journal."""
    sim.state.journal.clear()
    return sim


@pytest.fixture(scope="session")
async def openai_client(sim: RunningSimulator) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=sim.openai_base_url, api_key=API_KEY, max_retries=0)
    yield client
    await client.close()


@pytest.fixture(scope="session")
async def anthropic_client(sim: RunningSimulator) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(
        base_url=sim.anthropic_base_url, api_key=API_KEY, max_retries=0
    )
    yield client
    await client.close()
