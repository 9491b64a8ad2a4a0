"""The provider simulator in-process, for the worker's SDK paths."""

from collections.abc import AsyncIterator

import pytest

from switchboard.simulator import RunningSimulator, Settings, serve


@pytest.fixture(scope="session")
async def worker_sim() -> AsyncIterator[RunningSimulator]:
    async with serve(Settings(host="127.0.0.1", port=0, ttft_ms=0, token_delay_ms=0)) as running:
        yield running


@pytest.fixture
async def sim(worker_sim: RunningSimulator) -> RunningSimulator:
    """The shared simulator with an empty journal."""
    worker_sim.state.journal.clear()
    return worker_sim
