"""A client of the official `openai` SDK that reads only `choices[0].delta.content` ends with
the final text across real resets (docs/decisions/0031): the cascade of a hedging cheap
answer, and a provider stream cut mid-reply and retried on the same model."""

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai import AsyncOpenAI

from .conftest import Platform
from .markers import word_marker

pytestmark = pytest.mark.e2e


@pytest.fixture
async def client(platform: Platform) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(
        base_url=f"{platform.http_url}/v1", api_key=platform.api_key, max_retries=0, timeout=90
    ) as sdk:
        yield sdk


async def plain_stream(
    client: AsyncOpenAI, model: str, message: str, metadata: dict[str, str]
) -> tuple[str, dict[str, Any]]:
    """What a client reading only `delta.content` shows, and the `done` extension."""
    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": message}],
        stream=True,
        metadata=metadata,
    )
    shown, done = "", {}
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            shown += chunk.choices[0].delta.content
        extension = (chunk.model_extra or {}).get("switchboard") or {}
        if extension.get("type") == "done":
            done = extension
    return shown, done


async def test_a_cascaded_answer_reaches_a_plain_client_without_the_cheap_one(
    client: AsyncOpenAI,
) -> None:
    # The simulator quotes the message, so the cheap answer hedges ("I'm not sure") and the
    # cascade re-runs it on frontier after it was generated whole. Replies of 120 tokens: at
    # the default 40, two models' replies to the same message are alike about once in 120
    # messages (same greeting, same one sentence); at 120, none in 3,000 tried.
    message = f"hi, I'm not sure. thanks! {word_marker(6)}"
    controls = {"sim.tool": "none", "sim.tokens": "120"}
    shown, done = await plain_stream(client, "auto", message, controls)
    assert done["tier"] == "frontier" and done["resets"] == 1, done
    assert shown == done["content"]
    # The cheap model's wording never reached the client: it is not a prefix of the answer.
    whole = await client.chat.completions.create(
        model="cheap",
        messages=[{"role": "user", "content": message}],
        metadata=controls,
    )
    cheap_answer = whole.choices[0].message.content or ""
    assert cheap_answer and not shown.startswith(cheap_answer)


async def test_a_provider_retry_after_a_cut_stream_repeats_nothing(client: AsyncOpenAI) -> None:
    controls = {
        "sim.tool": "none",
        "sim.tokens": "60",
        "sim.delay_ms": "30",
        "sim.fault": "disconnect",
        "sim.fault_after": "10",
        "sim.fault_attempts": "1",
        "sim.key": uuid.uuid4().hex,
    }
    message = f"Please tell me about my delivery options, {word_marker()}"
    shown, done = await plain_stream(client, "cheap", message, controls)
    assert done["resets"] == 1, done
    assert shown == done["content"] and len(shown.split()) > 20
