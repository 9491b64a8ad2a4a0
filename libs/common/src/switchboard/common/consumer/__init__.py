"""A Kafka consumer that runs many records at once and commits only finished prefixes.

The modules: `handling` (what a handler sees: the record, its lease, the errors it may
raise), `limits` (the retry policy and the shared capacity) and `concurrent` (the consumer).
docs/architecture.md has the table of which topic each consumer reads and its commit rule.

Shared by the llm-worker, the orchestrator and memory. Written on aiokafka directly
because FastStream's subscribers cannot do this: with
`max_workers` they either acknowledge before processing (ACK_FIRST) or run one record at a
time per partition (one consumer per worker), so a slow generation would hold up its whole
partition or a crash would skip unfinished tasks.

- Bounded: at most `Capacity.limit` records run at once in the process; at the limit the
  consumer pauses its partitions and keeps polling, so it stays in its group.
- At-least-once, nothing skipped: a partition's offset is committed only up to its first
  record that has not finished (`offsets.PartitionOffsets`), so a crash redelivers every
  unfinished record.
- Rebalances: when partitions are revoked, their finished prefix is committed and running
  records go on; aiokafka's protocol revokes every partition on every rebalance, and most
  come straight back. Records of partitions that come back are recognised when fetched again
  and not run twice; records of partitions that went to another member are cancelled
  uncommitted (the new owner runs them again).
- Every failure ends: a record whose handler raised is tried again in place, after a pause
  that doubles per attempt (with jitter, so that records failing together do not retry in
  lockstep), up to `RetryPolicy.max_attempts`; then it goes to its dead-letter sink with the
  error (the service's sink also tells the turn's client) and the partition moves on.
  Retrying in place, rather than fetching the record again, keeps per-key order through
  retries: the next record of its key waits for the retry.
- Optional per-key order (`ordered_by_key`): records with the same key (a conversation id)
  run one after another in offset order, records of different keys at once, so that
  concurrency never reorders one conversation (shared/ARCHITECTURE.md, invariant 3).
- Ownership: a handler asks its `Lease` before making its outcome visible (the worker
  publishes a result only for a partition it still owns once a rebalance settled), so that a
  record moved to another member mid-run is finished by one member only.
"""

from switchboard.common.consumer.concurrent import ConcurrentConsumer
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

__all__ = [
    "DEAD_LETTERS",
    "RECORD_RETRIES",
    "Capacity",
    "ConcurrentConsumer",
    "DeadLetterSink",
    "Handler",
    "Lease",
    "PartitionLostError",
    "Record",
    "RetryPolicy",
    "Sleep",
    "UnprocessableError",
]
