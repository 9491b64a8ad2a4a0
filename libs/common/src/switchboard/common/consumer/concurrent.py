"""The concurrent consumer itself: fetch within capacity, dispatch (in key order when asked),
retry in place, dead-letter, follow rebalances, commit finished prefixes. See the package
docstring for the rules."""

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from functools import partial

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import IllegalStateError, KafkaError

from switchboard.common.consumer.handling import (
    DeadLetterSink,
    Handler,
    Lease,
    PartitionLostError,
    Record,
    Sleep,
    UnprocessableError,
)
from switchboard.common.consumer.limits import Capacity, RetryPolicy
from switchboard.common.metrics import DEAD_LETTERS, RECORD_RETRIES
from switchboard.common.offsets import PartitionOffsets
from switchboard.common.settings import KafkaSettings

log = logging.getLogger(__name__)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: "ConcurrentConsumer") -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._owner.partitions_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._owner.partitions_assigned(set(assigned))


class ConcurrentConsumer:
    """Consumes `topics` in `group_id`, running `handler` on many records at once.

    A record is done when `handler` returns; if it raises, it is tried again per `retry`,
    then handed to `dead_letter` (see the module docstring). `retry_backoff_s` is the pause
    after a failed fetch, and before a record whose dead letter could not be written is
    fetched again.
    """

    def __init__(
        self,
        *,
        topics: list[str],
        group_id: str,
        client_id: str,
        kafka: KafkaSettings,
        handler: Handler,
        capacity: Capacity,
        poll_timeout_ms: int = 200,
        commit_interval_s: float = 0.1,
        retry_backoff_s: float = 2.0,
        rebalance_wait_s: float = 30.0,
        ordered_by_key: bool = False,
        retry: RetryPolicy | None = None,
        dead_letter: DeadLetterSink | None = None,
        on_revoked: Callable[[], None] | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.topics = topics
        self.group_id = group_id
        self._client_id = client_id
        self._kafka = kafka
        self._handler = handler
        self._capacity = capacity
        self._poll_timeout_ms = poll_timeout_ms
        self._commit_interval_s = commit_interval_s
        self._retry_backoff_s = retry_backoff_s
        self._rebalance_wait_s = rebalance_wait_s
        self._ordered_by_key = ordered_by_key
        self._retry = retry or RetryPolicy.of(kafka)
        self._dead_letter = dead_letter
        # Told when partitions are revoked, before they may move to another member.
        self._on_revoked = on_revoked
        self._sleep = sleep
        # The latest dispatched record of each key, which the next one of that key awaits.
        self._key_tails: dict[tuple[TopicPartition, bytes], asyncio.Task[None]] = {}
        self._settled = asyncio.Event()  # no rebalance under way
        self._consumer: AIOKafkaConsumer | None = None
        self._owned: set[TopicPartition] = set()
        self._offsets: dict[TopicPartition, PartitionOffsets] = {}
        self._running: dict[tuple[TopicPartition, int], asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._commit_lock = asyncio.Lock()
        self._dirty = asyncio.Event()
        self._paused = False
        self._fetching: asyncio.Task[None] | None = None
        self._committing: asyncio.Task[None] | None = None

    @property
    def running(self) -> int:
        """Records being processed now."""
        return len(self._running)

    @property
    def assignment(self) -> set[TopicPartition]:
        """The partitions this consumer owns."""
        return set(self._owned)

    async def start(self) -> None:
        """Join the group and start fetching."""
        kafka = self._kafka
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap_servers,
            client_id=self._client_id,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=kafka.session_timeout_ms,
            heartbeat_interval_ms=kafka.heartbeat_interval_ms,
            max_poll_interval_ms=kafka.max_poll_interval_ms,
            request_timeout_ms=kafka.request_timeout_ms,
            retry_backoff_ms=kafka.retry_backoff_ms,
        )
        self._consumer.subscribe(self.topics, listener=_Listener(self))
        await self._consumer.start()
        self._fetching = asyncio.create_task(self._fetch_loop(), name=f"fetch {self.group_id}")
        self._committing = asyncio.create_task(self._commit_loop(), name=f"commit {self.group_id}")

    async def stop(self, grace_s: float) -> None:
        """Stop fetching, let running records finish for up to `grace_s`, abandon the rest
        uncommitted, commit what finished, and leave the group."""
        for task in (self._fetching, *self._background):
            if task is not None:
                task.cancel()
        await asyncio.gather(
            *(t for t in (self._fetching, *self._background) if t is not None),
            return_exceptions=True,
        )
        running = list(self._running.values())
        if running:
            _, late = await asyncio.wait(running, timeout=grace_s)
            if late:
                log.warning(
                    "%s: abandoning %d unfinished records; they will be redelivered",
                    self.group_id,
                    len(late),
                )
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._committing is not None:
            self._committing.cancel()
            await asyncio.gather(self._committing, return_exceptions=True)
        await self.commit()
        if self._consumer is not None:
            await self._consumer.stop()

    # -- fetching ---------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while True:
            try:
                if self._capacity.free == 0:
                    self._set_paused(True)
                    await self._capacity.wait_free(self._poll_timeout_ms / 1000)
                    # Poll anyway: a consumer that stops polling is expelled from its group.
                    batch = await consumer.getmany(timeout_ms=0, max_records=1)
                else:
                    self._set_paused(False)
                    batch = await consumer.getmany(
                        timeout_ms=self._poll_timeout_ms, max_records=self._capacity.free
                    )
            except KafkaError as exc:
                log.warning("%s: fetching failed, retrying: %s", self.group_id, exc)
                await asyncio.sleep(self._retry_backoff_s)
                continue
            except Exception:  # never let the loop die: the worker would stop consuming
                log.exception("%s: unexpected failure while fetching; retrying", self.group_id)
                await asyncio.sleep(self._retry_backoff_s)
                continue
            for tp, records in batch.items():
                self._dispatch(tp, records)

    def _set_paused(self, paused: bool) -> None:
        consumer = self._consumer
        assert consumer is not None
        if paused:
            consumer.pause(*consumer.assignment())
        elif self._paused:
            consumer.resume(*consumer.assignment())
        self._paused = paused

    def _dispatch(self, tp: TopicPartition, records: list[Record]) -> None:
        offsets = self._offsets.get(tp)
        if tp not in self._owned or offsets is None:
            return  # fetched just before the partition moved: its new owner reads it
        for record in records:
            if offsets.handled(record.offset):
                continue  # runs or finished already: fetched again after a rebalance
            if self._capacity.free == 0:
                # No room (records can arrive while paused): fetch this one again later.
                self._seek(tp, record.offset)
                return
            offsets.begin(record.offset)
            self._capacity.take()
            key = (tp, record.offset)
            previous = None
            tail_key = (tp, record.key or b"")
            if self._ordered_by_key:
                previous = self._key_tails.get(tail_key)
            task = asyncio.create_task(
                self._run(tp, record, previous),
                name=f"{tp.topic}[{tp.partition}]@{record.offset}",
            )
            self._running[key] = task
            if self._ordered_by_key:
                self._key_tails[tail_key] = task
                task.add_done_callback(partial(self._forget_tail, tail_key))

    def _forget_tail(
        self, tail_key: tuple[TopicPartition, bytes], task: asyncio.Task[None]
    ) -> None:
        if self._key_tails.get(tail_key) is task:
            del self._key_tails[tail_key]

    async def _run(
        self, tp: TopicPartition, record: Record, previous: asyncio.Task[None] | None = None
    ) -> None:
        key = (tp, record.offset)
        try:
            if previous is not None:
                # Same key: wait for the earlier record to end, whatever its outcome.
                await asyncio.wait([previous])
            await self._attempts(tp, record)
        except asyncio.CancelledError:
            raise  # abandoned: left uncommitted, redelivered to whoever owns the partition
        finally:
            self._running.pop(key, None)
            self._capacity.give()

    async def _attempts(self, tp: TopicPartition, record: Record) -> None:
        """Run the handler until it succeeds or the attempts run out (then dead-letter)."""
        where = f"{tp.topic}[{tp.partition}]@{record.offset}"
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._handler(record, Lease(self, tp))
            except PartitionLostError:
                log.info(
                    "%s: %s finished after its partition moved; left to the new owner",
                    self.group_id,
                    where,
                )
                self._release(tp, record.offset)
                return
            except Exception as exc:
                error = (
                    str(exc)
                    if isinstance(exc, UnprocessableError)
                    else f"{type(exc).__name__}: {exc}"
                )
                if attempt < self._retry.max_attempts and not isinstance(exc, UnprocessableError):
                    RECORD_RETRIES.labels(tp.topic, self.group_id).inc()
                    pause = self._retry.pause(attempt)
                    log.warning(
                        "%s: %s failed (attempt %d of %d), retrying in %.1fs: %s",
                        self.group_id,
                        where,
                        attempt,
                        self._retry.max_attempts,
                        pause,
                        error,
                        exc_info=attempt == 1,
                    )
                    await self._sleep(pause)
                    continue
                log.error(
                    "%s: %s failed %d times; dead-lettering it: %s",
                    self.group_id,
                    where,
                    attempt,
                    error,
                    exc_info=True,
                )
                if not await self._give_up(tp, record, error):
                    return
            self._finish(tp, record.offset)
            return

    async def _give_up(self, tp: TopicPartition, record: Record, error: str) -> bool:
        """Dead-letter `record`; False (and fetched again later) when that failed."""
        if self._dead_letter is not None:
            try:
                await self._dead_letter(record, error)
            except Exception:
                log.exception(
                    "%s: dead letter of %s[%d]@%d not written; fetching it again in %gs",
                    self.group_id,
                    tp.topic,
                    tp.partition,
                    record.offset,
                    self._retry_backoff_s,
                )
                self._release(tp, record.offset)
                return False
        else:
            log.error("%s: no dead-letter topic configured; record skipped", self.group_id)
        DEAD_LETTERS.labels(tp.topic, self.group_id).inc()
        return True

    def _finish(self, tp: TopicPartition, offset: int) -> None:
        offsets = self._offsets.get(tp)
        if offsets is not None:
            offsets.finish(offset)
            self._dirty.set()

    def _release(self, tp: TopicPartition, offset: int) -> None:
        """Fetch `offset` again later (if the partition is still, or again, ours)."""
        offsets = self._offsets.get(tp)
        if offsets is not None:
            offsets.release(offset)
            retry = asyncio.create_task(self._fetch_again(tp, offset))
            self._background.add(retry)
            retry.add_done_callback(self._background.discard)

    async def _fetch_again(self, tp: TopicPartition, offset: int) -> None:
        await asyncio.sleep(self._retry_backoff_s)
        offsets = self._offsets.get(tp)
        if tp in self._owned and offsets is not None and offset in offsets.released:
            # From the lowest record waiting, so that two retries cannot skip one another;
            # everything above it that runs or finished is recognised and skipped.
            self._seek(tp, min(offsets.released))

    def _seek(self, tp: TopicPartition, offset: int) -> None:
        assert self._consumer is not None
        # No longer assigned: the next owner starts from the committed offset anyway.
        with contextlib.suppress(IllegalStateError):
            self._consumer.seek(tp, offset)

    # -- rebalancing --------------------------------------------------------------------

    async def partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Commit the finished prefix of `revoked` before they may move; keep running."""
        self._settled.clear()
        if self._on_revoked is not None and revoked:
            self._on_revoked()
        await self.commit(revoked)
        self._owned -= revoked
        log.info("%s: revoked %s", self.group_id, sorted(revoked))

    def partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Adopt `assigned`; cancel what runs for partitions that went to another member."""
        self._owned = set(assigned)
        self._paused = False  # a new assignment starts unpaused
        for tp in [tp for tp in self._offsets if tp not in assigned]:
            del self._offsets[tp]
            lost = [task for (p, _), task in self._running.items() if p == tp]
            if lost:
                log.warning(
                    "%s: %s[%d] moved to another member; abandoning %d running records",
                    self.group_id,
                    tp.topic,
                    tp.partition,
                    len(lost),
                )
            for task in lost:
                task.cancel()
        for tp in assigned:
            self._offsets.setdefault(tp, PartitionOffsets())
        self._dirty.set()  # records that finished while revoked can be committed now
        self._settled.set()
        log.info("%s: assigned %s", self.group_id, sorted(assigned))

    async def owns(self, tp: TopicPartition) -> bool:
        """Whether `tp` is ours once a rebalance under way settled (bounded wait)."""
        if not self._settled.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._rebalance_wait_s):
                    await self._settled.wait()
        return self._settled.is_set() and tp in self._owned

    # -- committing ---------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            await self.commit()
            if self._commit_interval_s:
                await asyncio.sleep(self._commit_interval_s)

    async def commit(self, partitions: set[TopicPartition] | None = None) -> None:
        """Commit the finished prefix of each owned partition (of `partitions` if given)."""
        consumer = self._consumer
        if consumer is None:
            return
        async with self._commit_lock:
            offsets = {
                tp: point
                for tp, tracked in self._offsets.items()
                if tp in self._owned
                and (partitions is None or tp in partitions)
                and (point := tracked.to_commit()) is not None
            }
            if not offsets:
                return
            try:
                await consumer.commit(offsets)
            except (KafkaError, IllegalStateError) as exc:
                # A rebalance is under way (or Kafka is away); what finished is committed
                # later, or redelivered and recognised as finished by its handler.
                log.info("%s: commit of %s deferred: %s", self.group_id, offsets, exc)
                return
            for tp, point in offsets.items():
                if tp in self._offsets:
                    self._offsets[tp].mark_committed(point)
