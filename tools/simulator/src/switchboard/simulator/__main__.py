"""`python -m switchboard.simulator`: run the simulator until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal

from .app import serve
from .settings import Settings

log = logging.getLogger("switchboard.simulator")


async def run(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then close the listener and finish open streams."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with serve(settings) as sim:
        log.info(
            "simulator listening on %s (OpenAI base_url %s, Anthropic base_url %s; "
            "ttft %s ms, token delay %s ms, %s tokens per reply)",
            sim.base_url,
            sim.openai_base_url,
            sim.anthropic_base_url,
            settings.ttft_ms,
            settings.token_delay_ms,
            settings.reply_tokens,
        )
        # It stands in for a provider on every path of `make bench`: a full collection walking
        # the start-up objects (tokenizer, aiohttp) paused it 70-90 ms, on whichever path
        # happened to be calling. Frozen, they are never walked again.
        gc.collect()
        gc.freeze()
        await stop.wait()
        log.info("simulator shutting down")
    log.info("simulator stopped")


def main() -> None:
    """Entry point: read settings from the environment and serve."""
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
