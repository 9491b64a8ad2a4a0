import gc
from collections.abc import Iterator

import pytest

from switchboard.common.lifecycle import freeze_startup_objects


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
