"""Committing a partition whose records finish out of order."""

from switchboard.common.offsets import PartitionOffsets


def test_the_commit_point_waits_for_the_oldest_unfinished_record() -> None:
    offsets = PartitionOffsets()
    assert offsets.commit_point() is None and offsets.to_commit() is None
    for offset in (10, 11, 12):
        assert offsets.begin(offset)
    assert offsets.commit_point() == 10
    offsets.finish(12)
    offsets.finish(11)
    assert offsets.to_commit() == 10, "10 still runs: nothing after it may be committed"
    offsets.finish(10)
    assert offsets.to_commit() == 13
    offsets.mark_committed(13)
    assert offsets.to_commit() is None
    assert offsets.idle


def test_records_fetched_again_are_recognised() -> None:
    offsets = PartitionOffsets()
    for offset in (5, 6, 7):
        offsets.begin(offset)
    offsets.finish(6)
    # A rebalance gave the partition back: fetching restarts at the committed offset.
    assert offsets.handled(5) and offsets.handled(6) and not offsets.handled(8)
    assert not offsets.begin(5), "still running"
    assert not offsets.begin(6), "finished, not committed yet"
    assert not offsets.begin(7)
    assert offsets.begin(8), "new"
    offsets.finish(5)
    offsets.mark_committed(offsets.to_commit() or 0)
    assert offsets.committed == 7
    assert not offsets.begin(6), "below the committed offset"


def test_a_released_record_holds_the_commit_until_it_runs_again() -> None:
    offsets = PartitionOffsets()
    for offset in (1, 2, 3):
        offsets.begin(offset)
    offsets.release(1)  # failed: will be fetched again
    offsets.finish(2)
    offsets.finish(3)
    assert offsets.to_commit() == 1
    assert not offsets.idle
    assert offsets.begin(1), "fetched again, it runs again"
    offsets.finish(1)
    assert offsets.to_commit() == 4


def test_gaps_in_offsets_are_committed_over() -> None:
    # Compacted topics and transaction markers leave holes in the offsets.
    offsets = PartitionOffsets()
    offsets.begin(3)
    offsets.begin(9)
    offsets.finish(9)
    offsets.finish(3)
    assert offsets.to_commit() == 10


def test_finished_offsets_are_forgotten_once_committed() -> None:
    offsets = PartitionOffsets()
    for offset in range(1000):
        offsets.begin(offset)
        offsets.finish(offset)
    offsets.mark_committed(offsets.to_commit() or 0)
    assert offsets.finished == set() and offsets.committed == 1000
