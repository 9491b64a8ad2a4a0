"""Process lifecycle shared by the services."""

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any

import uvloop

from switchboard.common.settings import RuntimeSettings


def run(main: Coroutine[Any, Any, None], settings: RuntimeSettings | None = None) -> None:
    """Run a service's `main` to its end on the configured event loop."""
    settings = settings or RuntimeSettings()
    if settings.event_loop == "uvloop":
        uvloop.run(main)
    else:
        asyncio.run(main)


async def wait_for_stop_signal() -> None:
    """Return when the process receives SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
