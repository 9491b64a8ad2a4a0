"""Idempotency by request id: one generation per request id, across every gateway replica.

The first call with a request id claims it in Redis and becomes its owner: it publishes the
turn and records every event it relays into a Redis stream, in batches a short window apart,
the last one together with the request's end. A repeated request id, on any
replica, follows that stream from its start: while the owner runs it attaches (the events so
far, then live ones); after the reply finished it replays it. A reply stays replayable for
`idempotency_ttl_s`. Request ids are global (the workers cancel and the orchestrator tracks
turns by request id), so another tenant's id, or the same id with a different request, is
refused without revealing anything about the first.

`RedisRequestStore` keeps the claims and recorded replies; `Retries` is what a repeated
request id gets (attach, replay or a refusal); `relay.ReplyRelay` records as it relays.
"""

import asyncio
import enum
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol, cast

import grpc
from redis.asyncio import Redis
from redis.exceptions import RedisError

from switchboard.common.tenants import TenantConfig
from switchboard.gateway.metrics import CHATS, RECORDING
from switchboard.gateway.ports import OnAdmitted
from switchboard.gateway.refusals import Refused, error_event, owner_gone
from switchboard.gateway.replies import ReplyTimeoutError, is_terminal
from switchboard.v1.chat_pb2 import ChatEvent, ChatRequest, Error

log = logging.getLogger(__name__)


class RequestState(enum.StrEnum):
    """Where a claimed request is."""

    RUNNING = "running"
    DONE = "done"


@dataclass(frozen=True)
class RequestRecord:
    """What the gateway remembers of a request id."""

    tenant_id: str
    fingerprint: str
    # The reply topic of the gateway instance that owns the request.
    owner: str
    state: RequestState


class RequestStoreUnavailableError(Exception):
    """Redis could not be reached."""


class RequestVanishedError(Exception):
    """The request's record disappeared while following it (refused before acceptance)."""


class OwnerGoneError(Exception):
    """The gateway instance that owned a running request stopped before it finished."""


def fingerprint(request: ChatRequest) -> str:
    """What makes two calls with one request id the same request."""
    digest = hashlib.sha256()
    for part in (request.conversation_id, request.user_id, request.message):
        digest.update(part.encode())
        digest.update(b"\x00")
    digest.update(request.options.SerializeToString(deterministic=True))
    return digest.hexdigest()


class Recorder(Protocol):
    """Records the events of an owned request so that retries can follow them."""

    def add(self, event: ChatEvent) -> None:
        """Queue one event; never blocks the live stream."""
        ...

    async def finish(self) -> None:
        """Write what is buffered and mark the request done."""
        ...


class RequestStore(Protocol):
    """Request records and their recorded events (Redis in production)."""

    async def get(self, request_id: str) -> RequestRecord | None: ...

    async def claim(self, request_id: str, record: RequestRecord) -> RequestRecord | None:
        """Claim `request_id`; None when claimed, else the record that holds it already."""
        ...

    async def release(self, request_id: str) -> None:
        """Forget a claim whose request was refused before it was accepted."""
        ...

    def recorder(self, request_id: str, record: RequestRecord) -> Recorder:
        """A recorder for a request this caller claimed with `record`."""
        ...

    async def follower_joined(self, request_id: str) -> None:
        """A retry started following the request."""
        ...

    async def follower_left(self, request_id: str) -> None:
        """A retry stopped following the request."""
        ...

    async def followers(self, request_id: str) -> int:
        """How many retries follow the request now."""
        ...

    def follow(
        self,
        request_id: str,
        idle_timeout_s: float,
        owner_alive: Callable[[str], Awaitable[bool]],
    ) -> AsyncIterator[ChatEvent]:
        """The request's events from the first, live until a terminal one."""
        ...


def request_key(tenant_id: str, request_id: str) -> str:
    """The store's id of a tenant's request: request ids are chosen by clients, so every
    record is scoped by tenant and one tenant cannot squat another's id."""
    return f"{tenant_id}/{request_id}"


def record_key(request_id: str) -> str:
    """The Redis key of a request's record."""
    # The hash tag keeps a request's keys in one Redis Cluster slot.
    return f"sb:req:{{{request_id}}}"


def _events_key(request_id: str) -> str:
    return f"sb:req:{{{request_id}}}:events"


def _followers_key(request_id: str) -> str:
    return f"sb:req:{{{request_id}}}:followers"


class RedisRequestStore:
    """Records as JSON strings, events in a Redis stream per request, both with TTLs."""

    def __init__(
        self,
        redis: Redis,
        *,
        running_ttl_s: int,
        done_ttl_s: int,
        poll_s: float,
        buffer_events: int,
        batch_window_s: float,
    ) -> None:
        self._redis = redis
        self._running_ttl_s = running_ttl_s
        self._done_ttl_s = done_ttl_s
        self._poll_ms = max(1, int(poll_s * 1000))
        self._buffer_events = buffer_events
        self._batch_window_s = batch_window_s

    async def get(self, request_id: str) -> RequestRecord | None:
        """The record of `request_id`, if any."""
        try:
            raw = await self._redis.get(record_key(request_id))
        except RedisError as exc:
            raise RequestStoreUnavailableError(f"Redis is unreachable: {exc}") from exc
        return decode_record(raw)

    async def claim(self, request_id: str, record: RequestRecord) -> RequestRecord | None:
        """`SET NX`: exactly one caller claims a request id."""
        value = json.dumps(asdict(record))
        try:
            claimed = await self._redis.set(
                record_key(request_id), value, nx=True, ex=self._running_ttl_s
            )
            if claimed:
                return None
            raw = await self._redis.get(record_key(request_id))
        except RedisError as exc:
            raise RequestStoreUnavailableError(f"Redis is unreachable: {exc}") from exc
        existing = decode_record(raw)
        # Gone between the two calls (released): report it as running so the caller follows
        # it and learns that it vanished, rather than racing a second claim.
        return existing or RequestRecord(
            record.tenant_id, record.fingerprint, record.owner, RequestState.RUNNING
        )

    async def release(self, request_id: str) -> None:
        """Delete the claim and anything recorded for it."""
        try:
            await self._redis.delete(
                record_key(request_id), _events_key(request_id), _followers_key(request_id)
            )
        except RedisError as exc:
            log.warning("claim of %s not released (its TTL frees it): %s", request_id, exc)

    def recorder(self, request_id: str, record: RequestRecord) -> "RedisRecorder":
        """A recorder for a request this caller claimed with `record`."""
        return RedisRecorder(self, request_id, record, self._buffer_events, self._batch_window_s)

    async def follower_joined(self, request_id: str) -> None:
        """Count a follower (the count expires with the request's running TTL)."""
        key = _followers_key(request_id)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, self._running_ttl_s)
                await pipe.execute()
        except RedisError as exc:
            raise RequestStoreUnavailableError(f"Redis is unreachable: {exc}") from exc

    async def follower_left(self, request_id: str) -> None:
        """Uncount a follower."""
        try:
            await self._redis.decr(_followers_key(request_id))
        except RedisError as exc:
            log.warning("follower of %s not uncounted: %s", request_id, exc)

    async def followers(self, request_id: str) -> int:
        """The followers counted now."""
        try:
            value = await self._redis.get(_followers_key(request_id))
        except RedisError as exc:
            raise RequestStoreUnavailableError(f"Redis is unreachable: {exc}") from exc
        return max(0, int(value or 0))

    async def follow(
        self,
        request_id: str,
        idle_timeout_s: float,
        owner_alive: Callable[[str], Awaitable[bool]],
    ) -> AsyncIterator[ChatEvent]:
        """Blocking reads of the request's stream, from its start, until a terminal event."""
        key = _events_key(request_id)
        last_id: bytes | str = "0-0"
        loop = asyncio.get_running_loop()
        idle_deadline = loop.time() + idle_timeout_s
        while True:
            try:
                batches = await self._redis.xread({key: last_id}, count=256, block=self._poll_ms)
            except RedisError as exc:
                raise RequestStoreUnavailableError(f"Redis is unreachable: {exc}") from exc
            entries = _entries(batches)
            for entry_id, fields in entries:
                last_id = entry_id
                event = ChatEvent.FromString(fields[b"e"])
                yield event
                if is_terminal(event):
                    return
            if entries:
                idle_deadline = loop.time() + idle_timeout_s
                continue
            record = await self.get(request_id)
            if record is None:
                raise RequestVanishedError(request_id)
            if record.state is RequestState.RUNNING and not await owner_alive(record.owner):
                raise OwnerGoneError(record.owner)
            if loop.time() >= idle_deadline:
                raise ReplyTimeoutError(request_id)

    async def append_events(self, request_id: str, events: list[ChatEvent]) -> None:
        """Add events to the request's stream."""
        key = _events_key(request_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            for event in events:
                pipe.xadd(key, {"e": event.SerializeToString()})
            pipe.expire(key, self._running_ttl_s)
            await pipe.execute()

    async def complete(
        self, request_id: str, record: RequestRecord, events: list[ChatEvent]
    ) -> None:
        """Add the last events and mark the request done, kept for replay for the done TTL:
        one round trip. A record that vanished meanwhile (released) is not written again."""
        done = json.dumps(asdict(replace(record, state=RequestState.DONE)))
        events_key = _events_key(request_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            for event in events:
                pipe.xadd(events_key, {"e": event.SerializeToString()})
            pipe.expire(events_key, self._done_ttl_s)
            pipe.set(record_key(request_id), done, xx=True, ex=self._done_ttl_s)
            await pipe.execute()


class RedisRecorder:
    """Writes events in the background, off the live stream's path: what arrives within
    `batch_window_s` of the first unwritten event goes in one pipelined write, and what is
    left at the end goes with the request's completion. Followers of a running request
    therefore lag it by up to the window; a reply shorter than it costs one round trip."""

    def __init__(
        self,
        store: RedisRequestStore,
        request_id: str,
        record: RequestRecord,
        buffer_events: int,
        batch_window_s: float,
    ) -> None:
        self._store = store
        self._request_id = request_id
        self._record = record
        self._buffer_events = buffer_events
        self._batch_window_s = batch_window_s
        self._buffered: list[ChatEvent] = []
        self._queued = asyncio.Event()
        self._finishing = False
        # Resolved when the batch window closes or the reply ends (a future and a timer
        # rather than wait_for: no task and no cancellation per batch).
        self._window: asyncio.Future[None] | None = None
        self._failed = False
        self._last_sequence = 0
        self._writer = asyncio.create_task(self._write(), name=f"record-{request_id}")

    def add(self, event: ChatEvent) -> None:
        """Buffer `event`; a full buffer or a failed write stops the recording, not the reply."""
        if self._failed:
            RECORDING.labels("dropped").inc()
            return
        if len(self._buffered) >= self._buffer_events:
            self._fail("the recording buffer is full")
            return
        self._buffered.append(event)
        self._last_sequence = event.sequence
        self._queued.set()

    async def finish(self) -> None:
        """Write what is buffered and mark the request done (its reply becomes replayable)."""
        self._finishing = True
        if self._window is not None:
            _resolve(self._window)
        self._queued.set()
        await self._writer

    def _fail(self, reason: str) -> None:
        if not self._failed:
            log.warning("recording of %s stopped: %s", self._request_id, reason)
        self._failed = True
        RECORDING.labels("failed").inc()
        self._buffered.clear()

    async def _write(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._queued.wait()
            if not self._finishing:
                # Let the batch grow for a moment (or until the reply ends).
                self._window = loop.create_future()
                timer = loop.call_later(self._batch_window_s, _resolve, self._window)
                try:
                    await self._window
                finally:
                    timer.cancel()
            self._queued.clear()
            batch, self._buffered = self._buffered, []
            if self._finishing:
                await self._complete(batch)
                return
            if self._failed or not batch:
                continue
            try:
                await self._store.append_events(self._request_id, batch)
                RECORDING.labels("recorded").inc(len(batch))
            except RedisError as exc:
                self._fail(f"Redis: {exc}")

    async def _complete(self, batch: list[ChatEvent]) -> None:
        if self._failed:
            # Followers must not wait for events that will never be written.
            batch = [
                ChatEvent(
                    request_id=self._request_id,
                    sequence=self._last_sequence + 1,
                    error=Error(
                        code="DATA_LOSS",
                        message="the reply could not be recorded for replay; "
                        "send the message again with a new request_id",
                    ),
                )
            ]
        try:
            await self._store.complete(self._request_id, self._record, batch)
            if not self._failed:
                RECORDING.labels("recorded").inc(len(batch))
        except RedisError as exc:
            log.warning("request %s not marked done: %s", self._request_id, exc)


def _resolve(future: "asyncio.Future[None]") -> None:
    if not future.done():
        future.set_result(None)


def _entries(batches: object) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """The entries of a one-stream XREAD answer (RESP2: [[key, entries]]; RESP3: {key: ...})."""
    if not batches:
        return []
    if isinstance(batches, dict):
        return cast(list[tuple[bytes, dict[bytes, bytes]]], next(iter(batches.values()))[0])
    return cast(list[tuple[bytes, dict[bytes, bytes]]], cast(list[Any], batches)[0][1])


def decode_record(raw: bytes | str | None) -> RequestRecord | None:
    """A stored record, or None."""
    if raw is None:
        return None
    data = json.loads(raw)
    return RequestRecord(
        tenant_id=data["tenant_id"],
        fingerprint=data["fingerprint"],
        owner=data["owner"],
        state=RequestState(data["state"]),
    )


class Retries:
    """A call with a request id already claimed: attach to the running request, or replay its
    finished reply; refuse a reused id (another tenant's, or with a different request)."""

    def __init__(
        self,
        store: RequestStore,
        owner_alive: Callable[[str], Awaitable[bool]],
        reply_idle_timeout_s: float,
    ) -> None:
        self._store = store
        self._owner_alive = owner_alive
        self._reply_idle_timeout_s = reply_idle_timeout_s

    async def follow(
        self,
        request_id: str,
        record: RequestRecord,
        tenant: TenantConfig,
        request_print: str,
        on_admitted: OnAdmitted,
    ) -> AsyncIterator[ChatEvent]:
        """A retry: attach to the running request, or replay its finished reply."""
        if record.tenant_id != tenant.tenant_id or record.fingerprint != request_print:
            CHATS.labels("reused_request_id").inc()
            raise Refused(
                grpc.StatusCode.ALREADY_EXISTS,
                f"request_id {request_id} was already used for a different request; "
                "use a new request_id (a UUID) for each new message",
            )
        if record.state is RequestState.RUNNING and not await self._owner_alive(record.owner):
            CHATS.labels("owner_gone").inc()
            raise Refused(grpc.StatusCode.ABORTED, owner_gone(request_id))
        key = request_key(tenant.tenant_id, request_id)
        mode = "replayed" if record.state is RequestState.DONE else "attached"
        CHATS.labels(mode).inc()
        if mode == "attached":
            # Counted, so that an owner whose caller left keeps the reply going for us.
            try:
                await self._store.follower_joined(key)
            except RequestStoreUnavailableError as exc:
                CHATS.labels("unavailable").inc()
                raise Refused(grpc.StatusCode.UNAVAILABLE, str(exc)) from exc
        await on_admitted(mode)
        last_sequence = 0
        try:
            async for event in self._store.follow(
                key, self._reply_idle_timeout_s, self._owner_alive
            ):
                last_sequence = event.sequence
                yield event
        except ReplyTimeoutError:
            yield error_event(
                request_id,
                last_sequence + 1,
                "DEADLINE_EXCEEDED",
                f"no reply within {self._reply_idle_timeout_s:g}s",
            )
        except OwnerGoneError:
            yield error_event(request_id, last_sequence + 1, "ABORTED", owner_gone(request_id))
        except RequestVanishedError:
            yield error_event(
                request_id,
                last_sequence + 1,
                "ABORTED",
                f"request {request_id} was not accepted; send it again",
            )
        except RequestStoreUnavailableError as exc:
            raise Refused(grpc.StatusCode.UNAVAILABLE, str(exc)) from exc
        finally:
            if mode == "attached":
                await self._store.follower_left(key)
