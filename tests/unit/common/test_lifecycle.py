import gc
import sys
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from switchboard.common.lifecycle import freeze_startup_objects, tune_process
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
