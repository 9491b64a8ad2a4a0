"""`python -m switchboard.simulator` and its environment settings."""

import asyncio
import os
import re
import signal
import sys

import aiohttp
import pytest

from switchboard.simulator import Settings


def test_settings_come_from_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_SIM_PORT", "9999")
    monkeypatch.setenv("SWITCHBOARD_SIM_TTFT_MS", "0")
    monkeypatch.setenv("SWITCHBOARD_SIM_REPLY_TOKENS", "7")
    monkeypatch.setenv("SWITCHBOARD_SIM_MODELS", '["a", "b"]')

    settings = Settings()

    assert (settings.port, settings.ttft_s, settings.reply_tokens) == (9999, 0, 7)
    assert settings.models == ("a", "b")
    assert settings.host == "127.0.0.1"
    assert settings.journal_size == 1000


async def test_the_module_serves_and_stops_cleanly_on_sigterm() -> None:
    env = {**os.environ, "SWITCHBOARD_SIM_PORT": "0", "SWITCHBOARD_SIM_TTFT_MS": "0"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "switchboard.simulator",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        url = None
        while url is None:
            line = (await asyncio.wait_for(process.stderr.readline(), 20)).decode()
            assert line, "the simulator exited before listening"
            if match := re.search(r"listening on (http://\S+)", line):
                url = match.group(1)
        async with aiohttp.ClientSession() as session, session.get(f"{url}/_health") as response:
            assert response.status == 200

        process.send_signal(signal.SIGTERM)
        rest = (await asyncio.wait_for(process.stderr.read(), 20)).decode()
        assert await asyncio.wait_for(process.wait(), 20) == 0
        assert "simulator stopped" in rest
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
