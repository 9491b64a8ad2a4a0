"""The loads of a benchmark run: through the platform's gRPC API, through its OpenAI-compatible
HTTP API (the official SDK), and straight to the simulator through the OpenAI SDK (the
baseline). Each records per-request timings."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
import httpx2
import openai
from openai.types.chat import ChatCompletionMessageParam

from switchboard.v1.chat_pb2 import ChatOptions, ChatRequest
from switchboard.v1.chat_pb2_grpc import ChatServiceStub

MESSAGES = (
    "Hi, where is my order 10023? It was due yesterday.",
    "Can I change the delivery address to my office?",
    "Thanks. And how do I return the blue jacket?",
    "Is the refund paid to my card or as store credit?",
    "Great, that is all for today.",
)
SYSTEM_PROMPT = "You are a helpful support assistant."


@dataclass
class Sample:
    """One request: when it started, when its first text and its end arrived."""

    started: float
    first_token: float | None = None
    finished: float | None = None
    output_tokens: int = 0
    outcome: str = "ok"
    # Seconds between consecutive content deltas; recorded only by the paced phase.
    gaps_s: list[float] | None = None

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.started


@dataclass
class LoadResult:
    """All samples of one load and its wall-clock span."""

    name: str
    samples: list[Sample] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0

    @property
    def wall_s(self) -> float:
        return self.finished - self.started


Request = Callable[[int, int], Awaitable[Sample]]
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class Pacing:
    """The paced phase's conversations: each sends its next message `think_s` after its last
    reply ended, for at most `turns` turns and until `duration_s` after the phase began (a
    turn in flight then still finishes). Conversation i starts `ramp_s * i / conversations`
    into the phase, so that the arrivals are spread from the start (no thundering herd)."""

    conversations: int
    turns: int
    think_s: float
    ramp_s: float
    duration_s: float
    tokens: int = 150
    """Reply length, in tokens (a simulator control)."""
    token_delay_ms: float = 30.0
    """The simulator's gap between tokens (a simulator control)."""

    @property
    def nominal_reply_s(self) -> float:
        """How long a reply takes at the simulator's pace alone (the first token at once)."""
        return (self.tokens - 1) * self.token_delay_ms / 1000

    def start_offset(self, index: int) -> float:
        """When conversation `index` sends its first message, in s from the phase's start."""
        return self.ramp_s * index / max(1, self.conversations)

    def offered_turns_per_s(self) -> float:
        """The rate the schedule asks for once every conversation runs, with replies at the
        simulator's pace: what the paths should reach when nothing is saturated."""
        return self.conversations / (self.nominal_reply_s + self.think_s)


async def drive_paced(
    name: str,
    pacing: Pacing,
    send: Request,
    clock: Clock = time.perf_counter,
    sleep: Sleep = asyncio.sleep,
) -> LoadResult:
    """Run `pacing`'s conversations through `send` (index, turn) and collect the samples."""
    result = LoadResult(name, started=clock())
    stop_at = result.started + pacing.duration_s

    async def conversation(index: int) -> None:
        await sleep(pacing.start_offset(index))
        for turn in range(pacing.turns):
            if clock() >= stop_at:
                return
            result.samples.append(await send(index, turn))
            if turn + 1 < pacing.turns:
                if clock() + pacing.think_s >= stop_at:
                    return  # the next turn would start too late: do not wait for it
                await sleep(pacing.think_s)

    await asyncio.gather(*(conversation(i) for i in range(pacing.conversations)))
    result.finished = clock()
    return result


class GapRecorder:
    """Records the gaps between a sample's content deltas."""

    def __init__(self, sample: Sample, clock: Clock = time.perf_counter) -> None:
        self._sample = sample
        self._clock = clock
        self._last: float | None = None
        sample.gaps_s = []

    def delta(self) -> float:
        """A content delta arrived now; returns the time."""
        now = self._clock()
        if self._last is not None and self._sample.gaps_s is not None:
            self._sample.gaps_s.append(now - self._last)
        self._last = now
        return now


async def _drive(
    name: str, concurrency: int, requests: int, deadline_s: float | None, send: Request
) -> LoadResult:
    """`concurrency` conversations send requests one after another until `requests` are
    done (or `deadline_s` passed, for soak runs)."""
    result = LoadResult(name, started=time.perf_counter())
    counter = iter(range(requests))
    stop_at = None if deadline_s is None else result.started + deadline_s

    async def conversation(index: int) -> None:
        for turn, _ in enumerate(counter):
            if stop_at is not None and time.perf_counter() > stop_at:
                return
            result.samples.append(await send(index, turn))

    await asyncio.gather(*(conversation(i) for i in range(concurrency)))
    result.finished = time.perf_counter()
    return result


async def platform_load(
    target: str,
    api_key: str,
    concurrency: int,
    requests: int,
    tokens: int,
    timeout_s: float,
    deadline_s: float | None = None,
    sim: dict[str, str] | None = None,
    pacing: Pacing | None = None,
) -> LoadResult:
    """Chat calls through the gateway, one conversation per concurrent client; `sim` adds
    simulator controls (`sim.delay_ms`, ...) to every request's metadata. With `pacing`,
    the paced phase's conversations instead (and the gaps between deltas are recorded)."""
    metadata = (("authorization", f"Bearer {api_key}"),)
    controls = {"sim.tokens": str(tokens), **(sim or {})}
    conversations: dict[int, str] = {}
    async with grpc.aio.insecure_channel(target) as channel:
        stub = ChatServiceStub(channel)

        async def send(index: int, turn: int) -> Sample:
            request = ChatRequest(
                conversation_id=conversations.get(index, ""),
                message=MESSAGES[turn % len(MESSAGES)],
                user_id=f"bench-{index}",
                options=ChatOptions(tier="cheap", metadata=controls),
            )
            sample = Sample(started=time.perf_counter())
            gaps = GapRecorder(sample) if pacing is not None else None
            try:
                async for event in stub.Chat(request, metadata=metadata, timeout=timeout_s):
                    kind = event.WhichOneof("event")
                    if kind == "started":
                        conversations[index] = event.started.conversation_id
                    elif kind == "delta" and gaps is not None and event.delta.text:
                        now = gaps.delta()
                        if sample.first_token is None:
                            sample.first_token = now
                    elif kind == "delta" and sample.first_token is None:
                        sample.first_token = time.perf_counter()
                    elif kind == "done":
                        sample.output_tokens = event.done.usage.output_tokens
                    elif kind == "error":
                        sample.outcome = f"error:{event.error.code}"
            except grpc.aio.AioRpcError as exc:
                sample.outcome = f"status:{exc.code().name}"
            sample.finished = time.perf_counter()
            return sample

        if pacing is not None:
            return await drive_paced("platform", pacing, send)
        return await _drive("platform", concurrency, requests, deadline_s, send)


async def openai_load(
    name: str,
    base_url: str,
    api_key: str,
    model: str,
    concurrency: int,
    requests: int,
    timeout_s: float,
    *,
    metadata: dict[str, str] | None = None,
    system_prompt: bool = True,
    conversations: bool = False,
    deadline_s: float | None = None,
    pacing: Pacing | None = None,
) -> LoadResult:
    """Streamed chat completions with the official OpenAI SDK: the one client of every
    OpenAI-compatible path (the simulator directly, LiteLLM, Switchboard's HTTP edge), so
    that their figures differ only by what is behind the URL.

    `metadata` goes in every request's body (simulator controls; LiteLLM takes its from its
    config). `conversations` keeps one server-side Switchboard conversation per concurrent
    client (the id from the `started` extension chunk); without it each request carries its
    own system prompt (when `system_prompt`) and one user message, as a stateless proxy sees.
    `pacing`: the paced phase's conversations (the gaps between deltas are recorded).
    """
    # The SDK keeps 100 idle connections by default: every paced conversation keeps its own,
    # as the gRPC path does with its one channel, rather than reconnecting between turns.
    pool = max(100, pacing.conversations if pacing else concurrency)
    client = openai.AsyncOpenAI(
        base_url=base_url,
        api_key=api_key,
        max_retries=0,
        timeout=timeout_s,
        http_client=openai.DefaultAsyncHttpxClient(
            limits=httpx2.Limits(max_connections=max(1000, pool), max_keepalive_connections=pool)
        ),
    )
    ids: dict[int, str] = {}

    async def send(index: int, turn: int) -> Sample:
        sample = Sample(started=time.perf_counter())
        gaps = GapRecorder(sample) if pacing is not None else None
        body_metadata = dict(metadata or {})
        if conversations and index in ids:
            body_metadata["conversation_id"] = ids[index]
        messages: list[ChatCompletionMessageParam] = []
        if system_prompt:
            messages.append({"role": "system", "content": SYSTEM_PROMPT})
        messages.append({"role": "user", "content": MESSAGES[turn % len(MESSAGES)]})
        try:
            stream = await client.chat.completions.create(
                model=model,
                messages=messages,
                user=f"bench-{name}-{index}",
                stream=True,
                stream_options={"include_usage": True},
                metadata=body_metadata or openai.omit,
            )
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    if gaps is not None:
                        now = gaps.delta()
                        if sample.first_token is None:
                            sample.first_token = now
                    elif sample.first_token is None:
                        sample.first_token = time.perf_counter()
                if conversations:
                    extension = (chunk.model_extra or {}).get("switchboard") or {}
                    if extension.get("type") == "started":
                        ids[index] = extension["conversation_id"]
                if chunk.usage is not None:
                    sample.output_tokens = chunk.usage.completion_tokens
        except openai.APIError as exc:
            sample.outcome = f"error:{type(exc).__name__}"
        sample.finished = time.perf_counter()
        return sample

    try:
        if pacing is not None:
            return await drive_paced(name, pacing, send)
        return await _drive(name, concurrency, requests, deadline_s, send)
    finally:
        await client.close()


async def http_load(
    base_url: str,
    api_key: str,
    concurrency: int,
    requests: int,
    tokens: int,
    timeout_s: float,
    deadline_s: float | None = None,
) -> LoadResult:
    """The platform load through the gateway's HTTP door (server-side conversations)."""
    return await openai_load(
        "http",
        base_url,
        api_key,
        "cheap",
        concurrency,
        requests,
        timeout_s,
        metadata={"sim.tokens": str(tokens)},
        system_prompt=False,
        conversations=True,
        deadline_s=deadline_s,
    )


async def direct_load(
    base_url: str,
    concurrency: int,
    requests: int,
    tokens: int,
    timeout_s: float,
    deadline_s: float | None = None,
) -> LoadResult:
    """The same requests sent straight to the simulator with the official OpenAI SDK."""
    return await openai_load(
        "direct",
        base_url,
        "bench",
        "gpt-4o-mini",
        concurrency,
        requests,
        timeout_s,
        metadata={"sim.tokens": str(tokens)},
        deadline_s=deadline_s,
    )
