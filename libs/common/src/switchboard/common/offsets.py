"""Which offsets of a partition may be committed while records finish out of order.

Records of one partition run concurrently and finish in any order; the committed offset may
only pass a record once it and every record before it have finished. The tracker also
remembers what is running or finished above that point, so that records fetched again
after a rebalance or a seek are recognised instead of being processed twice.
"""

from dataclasses import dataclass, field


@dataclass
class PartitionOffsets:
    """The offsets of one partition that this consumer has started."""

    running: set[int] = field(default_factory=set)
    finished: set[int] = field(default_factory=set)
    # Released offsets: started, then given back to be fetched again (after a failure).
    released: set[int] = field(default_factory=set)
    # One past the highest offset ever started.
    fetched_up_to: int | None = None
    # What was last committed (the next offset to consume), if known.
    committed: int | None = None

    def handled(self, offset: int) -> bool:
        """Whether `offset` runs or finished already (so a fetch of it again is skipped)."""
        return (
            offset in self.running
            or offset in self.finished
            or (self.committed is not None and offset < self.committed)
        )

    def begin(self, offset: int) -> bool:
        """Start `offset`; False when it runs or finished already (fetched again)."""
        if self.handled(offset):
            return False
        self.released.discard(offset)
        self.running.add(offset)
        if self.fetched_up_to is None or offset >= self.fetched_up_to:
            self.fetched_up_to = offset + 1
        return True

    def finish(self, offset: int) -> None:
        """`offset` is done: its effects are durable."""
        self.running.discard(offset)
        self.finished.add(offset)

    def release(self, offset: int) -> None:
        """`offset` did not complete and will be fetched again; hold the commit below it."""
        self.running.discard(offset)
        self.released.add(offset)

    def commit_point(self) -> int | None:
        """The offset to commit: the lowest one not finished, or one past everything."""
        waiting = self.running | self.released
        if waiting:
            return min(waiting)
        return self.fetched_up_to

    def to_commit(self) -> int | None:
        """The commit point when it moved past what was committed, else None."""
        point = self.commit_point()
        if point is None or (self.committed is not None and point <= self.committed):
            return None
        return point

    def mark_committed(self, offset: int) -> None:
        """`offset` was committed."""
        if self.committed is None or offset > self.committed:
            self.committed = offset
        self._prune()

    def _prune(self) -> None:
        # Fetching resumes at the committed offset, never below it: forget what lies there.
        if self.committed is not None and self.finished:
            self.finished = {o for o in self.finished if o >= self.committed}

    @property
    def idle(self) -> bool:
        """Nothing runs or waits to be fetched again."""
        return not self.running and not self.released
