"""Process lifecycle shared by the services."""

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from switchboard.common.settings import ProcessSettings

log = logging.getLogger(__name__)

_P = ParamSpec("_P")
_T = TypeVar("_T")


def tune_process(settings: ProcessSettings | None = None) -> None:
    """Apply the process-wide settings (`SWITCHBOARD_PROCESS_*`): call once, at start."""
    settings = settings or ProcessSettings()
    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)


def freeze_startup_objects() -> None:
    """Exempt every object alive now from garbage collection: call once, when started.

    What start-up made (modules, classes, SDK clients, settings) lives as long as the
    process, yet each full collection walked all of it: pauses of 60 to 160 ms in the
    worker and the orchestrator, which hold about 270,000 and 120,000 such objects, once
    every few hundred requests. Frozen, they are never walked again (the price: start-up
    garbage in reference cycles is never freed).
    """
    gc.collect()
    gc.freeze()


async def wait_for_stop_signal() -> None:
    """Return when the process receives SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def cancel_and_wait(task: "asyncio.Task[None]") -> None:
    """Cancel a background task and wait until it ended (a teardown step)."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class BoundedExitStack(contextlib.AsyncExitStack):
    """An exit stack whose releases pushed with `push_async_callback` each get at most
    `step_timeout_s` (contexts entered with `enter_async_context` are not bounded).

    A release that overruns is logged by name and abandoned, and teardown goes on with the
    next one. A stop therefore always ends, and the log names the step that hung. Use it
    where the releases are quick by nature: a release that drains work for a grace period
    needs a bound above that grace.
    """

    def __init__(self, step_timeout_s: float) -> None:
        super().__init__()
        self._step_timeout_s = step_timeout_s

    def push_async_callback(
        self, callback: Callable[_P, Awaitable[_T]], /, *args: _P.args, **kwds: _P.kwargs
    ) -> Callable[_P, Awaitable[_T]]:
        name = getattr(callback, "__qualname__", repr(callback))
        timeout_s = self._step_timeout_s

        async def bounded() -> None:
            try:
                async with asyncio.timeout(timeout_s):
                    await callback(*args, **kwds)
            except TimeoutError:
                log.warning("teardown: %s did not finish within %gs; going on", name, timeout_s)

        super().push_async_callback(bounded)
        return callback
