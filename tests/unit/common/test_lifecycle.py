import asyncio
import gc
import logging
import sys
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from switchboard.common.lifecycle import BoundedExitStack, freeze_startup_objects, tune_process
from switchboard.common.settings import ProcessSettings


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_objects_alive_at_start_up_leave_the_collector(unfrozen: None) -> None:
    kept = [[i] for i in range(1_000)]
    before = len(gc.get_objects())
    freeze_startup_objects()
    assert gc.get_freeze_count() >= len(kept)
    # Frozen objects are in no generation any more; objects made later are collected.
    assert len(gc.get_objects()) <= before - len(kept)
    later = [0]
    assert any(x is later for x in gc.get_objects(generation=0))


def test_tune_process_sets_the_gil_switch_interval_from_its_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = sys.getswitchinterval()
    try:
        monkeypatch.setenv("SWITCHBOARD_PROCESS_GIL_SWITCH_INTERVAL_MS", "2.5")
        tune_process()
        assert sys.getswitchinterval() == pytest.approx(0.0025)
        tune_process(ProcessSettings(gil_switch_interval_ms=0.5))
        assert sys.getswitchinterval() == pytest.approx(0.0005)
    finally:
        sys.setswitchinterval(before)


def test_a_switch_interval_out_of_bounds_is_refused_by_name() -> None:
    with pytest.raises(ValidationError, match="gil_switch_interval_ms"):
        ProcessSettings(gil_switch_interval_ms=0)


async def test_a_release_that_hangs_is_abandoned_and_the_rest_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    released: list[str] = []

    async def release(name: str) -> None:
        released.append(name)

    async def hangs() -> None:
        await asyncio.Event().wait()

    with caplog.at_level(logging.WARNING, logger="switchboard.common.lifecycle"):
        async with asyncio.timeout(5):  # the stack's own bound, not this one, must end it
            async with BoundedExitStack(step_timeout_s=0.05) as stack:
                stack.push_async_callback(release, "first")
                stack.push_async_callback(hangs)
                stack.push_async_callback(release, "last")
    # Reverse order, as any exit stack; the hung step is named and skipped.
    assert released == ["last", "first"]
    assert "hangs did not finish within 0.05s" in caplog.text


async def test_a_release_that_fails_still_raises_after_the_others_ran() -> None:
    released: list[str] = []

    async def release(name: str) -> None:
        released.append(name)

    async def fails() -> None:
        raise RuntimeError("broken release")

    with pytest.raises(RuntimeError, match="broken release"):
        async with BoundedExitStack(step_timeout_s=1.0) as stack:
            stack.push_async_callback(release, "first")
            stack.push_async_callback(fails)
            stack.push_async_callback(release, "last")
    assert released == ["last", "first"]
