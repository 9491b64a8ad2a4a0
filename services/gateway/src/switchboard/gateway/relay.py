"""Relaying a reply: from the reply router to the caller, recorded for retries as it goes.

When the caller leaves mid-reply, the reply is cancelled (the worker stops paying for
tokens), or, with `disconnect_grace_s`, kept going for that long in case a retry with the
same request id follows it (see idempotency.py).
"""

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import grpc

from switchboard.gateway.idempotency import (
    Recorder,
    RequestStore,
    RequestStoreUnavailableError,
    request_key,
)
from switchboard.gateway.metrics import CHATS, TIME_TO_FIRST_TOKEN, record_tokens
from switchboard.gateway.ports import (
    BackendUnavailableError,
    HeldLock,
    OnAdmitted,
    TimeRemaining,
    TurnPublisher,
)
from switchboard.gateway.refusals import Refused, error_event
from switchboard.gateway.replies import (
    ReplyRouter,
    ReplyStream,
    ReplyTimeoutError,
    StreamOverflowError,
    is_terminal,
)
from switchboard.v1.chat_pb2 import ChatEvent, Started
from switchboard.v1.events_pb2 import CancelGeneration

log = logging.getLogger(__name__)


class ReplyRelay:
    """Streams admitted replies to their callers; see the module docstring."""

    def __init__(
        self,
        *,
        router: ReplyRouter,
        requests: RequestStore,
        publisher: TurnPublisher,
        reply_idle_timeout_s: float,
        disconnect_grace_s: float,
    ) -> None:
        self._router = router
        self._requests = requests
        self._publisher = publisher
        self._reply_idle_timeout_s = reply_idle_timeout_s
        self._disconnect_grace_s = disconnect_grace_s
        # Replies kept going for a retry after their caller left (see _keep_for_retry).
        self._orphans: set[asyncio.Task[None]] = set()

    async def run(
        self,
        conversation_id: str,
        request_id: str,
        stream: ReplyStream,
        lock: HeldLock,
        recorder: Recorder,
        tenant_id: str,
        time_remaining: TimeRemaining,
        on_admitted: OnAdmitted,
    ) -> AsyncIterator[ChatEvent]:
        """Stream the reply to the caller and record it for retries."""
        last_sequence = 0
        finished = False
        accepted_at = time.monotonic()
        first_text_at: float | None = None
        try:
            await on_admitted("new")
            started = ChatEvent(
                request_id=request_id,
                started=Started(conversation_id=conversation_id, request_id=request_id),
            )
            recorder.add(started)
            yield started
            try:
                async for event in stream.events(self._reply_idle_timeout_s):
                    last_sequence = event.sequence
                    recorder.add(event)
                    kind = event.WhichOneof("event")
                    if kind == "delta" and first_text_at is None:
                        first_text_at = time.monotonic()
                        TIME_TO_FIRST_TOKEN.observe(first_text_at - accepted_at)
                    elif kind == "done":
                        record_tokens(event.done.usage.output_tokens, first_text_at)
                    if is_terminal(event):
                        finished = True
                        # Free the conversation before the client hears `done`: its next
                        # message may arrive before this generator resumes.
                        await lock.release()
                    yield event
                CHATS.labels("completed").inc()
            except ReplyTimeoutError:
                CHATS.labels("timeout").inc()
                await self.cancel_quietly(tenant_id, request_id, "no reply within the idle timeout")
                finished = True
                timeout = error_event(
                    request_id,
                    last_sequence + 1,
                    "DEADLINE_EXCEEDED",
                    f"no reply within {self._reply_idle_timeout_s:g}s",
                )
                recorder.add(timeout)
                await lock.release()
                yield timeout
            except StreamOverflowError as exc:
                CHATS.labels("overflow").inc()
                # The caller is cut off below (RESOURCE_EXHAUSTED); followers learn it here.
                recorder.add(
                    error_event(
                        request_id,
                        last_sequence + 1,
                        "RESOURCE_EXHAUSTED",
                        f"the client read the reply stream too slowly ({exc})",
                    )
                )
                raise Refused(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"client read the reply stream too slowly ({exc})",
                ) from exc
        finally:
            remaining = time_remaining()
            deadline_passed = remaining is not None and remaining <= 0
            if not finished and self._disconnect_grace_s > 0 and not deadline_passed:
                # The caller left mid-reply: a retry may yet attach (see _keep_for_retry).
                orphan = asyncio.create_task(
                    self._keep_for_retry(
                        tenant_id, request_id, stream, lock, recorder, last_sequence
                    ),
                    name=f"keep-{request_id}",
                )
                self._orphans.add(orphan)
                orphan.add_done_callback(self._orphans.discard)
            else:
                await self._end(tenant_id, request_id, lock, recorder, finished, last_sequence)

    async def _end(
        self,
        tenant_id: str,
        request_id: str,
        lock: HeldLock,
        recorder: Recorder,
        finished: bool,
        last_sequence: int,
    ) -> None:
        self._router.close(tenant_id, request_id)
        if not finished:
            # The client went away (or we failed) mid-reply: stop paying for tokens.
            CHATS.labels("cancelled").inc()
            await self.cancel_quietly(tenant_id, request_id, "client disconnected")
            recorder.add(
                error_event(
                    request_id,
                    last_sequence + 1,
                    "CANCELLED",
                    "the caller that sent this request went away; its generation was cancelled",
                )
            )
        await lock.release()
        await recorder.finish()

    async def _keep_for_retry(
        self,
        tenant_id: str,
        request_id: str,
        stream: ReplyStream,
        lock: HeldLock,
        recorder: Recorder,
        last_sequence: int,
    ) -> None:
        """Go on recording a reply whose caller left, for `disconnect_grace_s`; then cancel it
        unless a retry follows it, in which case it runs to its end for that retry."""
        loop = asyncio.get_running_loop()
        decide_at = loop.time() + self._disconnect_grace_s
        decided = finished = False
        try:
            while True:
                if not decided and loop.time() >= decide_at:
                    decided = True
                    if await self._followers_quietly(request_key(tenant_id, request_id)) == 0:
                        break
                    CHATS.labels("resumed").inc()
                wait = self._reply_idle_timeout_s if decided else decide_at - loop.time()
                try:
                    event = await stream.next(max(wait, 0.0))
                except ReplyTimeoutError:
                    if decided:
                        break
                    continue
                except StreamOverflowError:
                    break
                last_sequence = event.sequence
                recorder.add(event)
                if is_terminal(event):
                    finished = True
                    break
        finally:
            await self._end(tenant_id, request_id, lock, recorder, finished, last_sequence)

    async def _followers_quietly(self, request_id: str) -> int:
        try:
            return await self._requests.followers(request_id)
        except RequestStoreUnavailableError as exc:
            log.warning("followers of %s unknown (%s): cancelling", request_id, exc)
            return 0

    async def close(self) -> None:
        """Cancel the replies kept for retries (at shutdown, while Kafka is still up)."""
        for orphan in list(self._orphans):
            orphan.cancel()
        await asyncio.gather(*self._orphans, return_exceptions=True)

    async def cancel_quietly(self, tenant_id: str, request_id: str, reason: str) -> None:
        try:
            await self._publisher.publish_cancel(
                CancelGeneration(request_id=request_id, reason=reason, tenant_id=tenant_id)
            )
        except (BackendUnavailableError, asyncio.CancelledError):
            log.warning("could not publish the cancellation of %s", request_id)
