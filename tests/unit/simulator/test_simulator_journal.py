"""The request journal, the health check and the error shapes of unknown routes."""

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiohttp
import anthropic
import openai

from switchboard.simulator import RunningSimulator

StartSimulator = Callable[..., AbstractAsyncContextManager[RunningSimulator]]


async def _get(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.json()


async def test_health(sim: RunningSimulator) -> None:
    assert await _get(f"{sim.base_url}/_health") == (200, {"status": "ok"})


async def test_the_journal_records_bodies_and_hides_keys(fresh_sim: RunningSimulator) -> None:
    openai_key, anthropic_key = "sk-openai-secret-1", "sk-ant-secret-2"
    async with (
        openai.AsyncOpenAI(
            base_url=fresh_sim.openai_base_url, api_key=openai_key, max_retries=0
        ) as oai,
        anthropic.AsyncAnthropic(
            base_url=fresh_sim.anthropic_base_url, api_key=anthropic_key, max_retries=0
        ) as ant,
    ):
        await oai.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "first"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        await ant.messages.create(
            model="claude-haiku-4-5",
            max_tokens=50,
            messages=[{"role": "user", "content": "second"}],
            metadata={"user_id": "u-1"},
        )
    async with aiohttp.ClientSession() as session:
        # x-api-key as older SDKs and raw clients send it.
        await session.post(
            f"{fresh_sim.base_url}/v1/messages",
            json={"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "3"}]},
            headers={"x-api-key": "sk-raw-secret-3"},
        )
        async with session.get(f"{fresh_sim.base_url}/_journal") as response:
            raw = await response.text()
            journal = await response.json()

    first, second, third = journal["requests"]
    assert (first["api"], first["method"], first["path"]) == (
        "openai",
        "POST",
        "/v1/chat/completions",
    )
    assert first["body"] == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "first"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert (second["api"], second["path"]) == ("anthropic", "/v1/messages")
    assert second["body"]["messages"] == [{"role": "user", "content": "second"}]
    assert second["body"]["metadata"] == {"user_id": "u-1"}
    assert third["api"] == "anthropic"
    assert first["time"] <= second["time"] <= third["time"]
    for entry in journal["requests"]:
        names = {name.lower() for name in entry["headers"]}
        assert not names & {"authorization", "x-api-key"}
        assert "content-type" in names
    for secret in (openai_key, anthropic_key, "sk-raw-secret-3"):
        assert secret not in raw


async def test_the_journal_keeps_rejected_requests(fresh_sim: RunningSimulator) -> None:
    async with aiohttp.ClientSession() as session:
        await session.post(f"{fresh_sim.openai_base_url}/chat/completions", data=b"{broken")
        await session.post(f"{fresh_sim.base_url}/v1/messages", json={"model": "m"})

    _, journal = await _get(f"{fresh_sim.base_url}/_journal")
    assert [(e["api"], e["body"]) for e in journal["requests"]] == [
        ("openai", None),
        ("anthropic", {"model": "m"}),
    ]


async def test_the_journal_is_bounded(start_simulator: StartSimulator) -> None:
    async with (
        start_simulator(journal_size=3) as sim,
        openai.AsyncOpenAI(base_url=sim.openai_base_url, api_key="k", max_retries=0) as client,
    ):
        for n in range(5):
            await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"message {n}"}]
            )
        _, journal = await _get(f"{sim.base_url}/_journal")

    contents = [e["body"]["messages"][0]["content"] for e in journal["requests"]]
    assert contents == ["message 2", "message 3", "message 4"]


async def test_delete_clears_the_journal(sim: RunningSimulator) -> None:
    async with aiohttp.ClientSession() as session:
        await session.post(f"{sim.base_url}/v1/messages", json={})
        async with session.delete(f"{sim.base_url}/_journal") as response:
            assert response.status == 200

    assert await _get(f"{sim.base_url}/_journal") == (200, {"requests": []})


async def test_unknown_anthropic_routes_get_anthropic_errors(sim: RunningSimulator) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{sim.base_url}/v1/nothing", headers={"anthropic-version": "2023-06-01"}) as r,
    ):
        payload = await r.json()

    assert r.status == 404
    assert payload["type"] == "error"
    assert payload["error"]["type"] == "not_found_error"


async def test_an_oversized_body_is_rejected(start_simulator: StartSimulator) -> None:
    async with (
        start_simulator(max_body_bytes=2048) as sim,
        aiohttp.ClientSession() as session,
        session.post(
            f"{sim.openai_base_url}/chat/completions",
            data=b"x" * 4096,
            headers={"Authorization": "Bearer k"},
        ) as response,
    ):
        payload = await response.json()

    assert response.status == 413
    assert "2048" in payload["error"]["message"]
