"""docs/asyncapi.yaml: the Kafka topics, declared on a FastStream broker and exported by
FastStream's AsyncAPI generator.

The services publish with a `switchboard.common.kafka.Publisher` and consume mostly with
`ConcurrentConsumer`, which FastStream does not see, so the topics are declared here, once,
with who produces and consumes each; the payload schemas come from the protobuf descriptors
(and the comments of proto/switchboard/v1/*.proto), so they follow the contracts.
"""

import re
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from pydantic import BaseModel, Field, create_model

from switchboard.v1.chat_pb2 import ChatEvent
from switchboard.v1.events_pb2 import (
    CancelGeneration,
    CompletedTurn,
    DeadLetter,
    LlmResult,
    LlmTask,
    TurnRequest,
)

PROTO_DIR = Path(__file__).resolve().parents[5] / "proto" / "switchboard" / "v1"


@dataclass(frozen=True)
class Topic:
    name: str
    payload: type[Message]
    key: str
    producers: tuple[str, ...]
    consumers: tuple[tuple[str, str | None, str], ...]  # (service, consumer group, commit rule)
    description: str


CONCURRENT = "ConcurrentConsumer: offsets committed only up to the first unfinished record"

TOPICS = [
    Topic(
        "chat.requests",
        TurnRequest,
        "conversation id",
        ("gateway",),
        (("orchestrator", "orchestrator", f"{CONCURRENT}; one record at a time per key"),),
        "A user message the gateway accepted.",
    ),
    Topic(
        "llm.tasks.{tier}",
        LlmTask,
        "conversation id",
        ("orchestrator", "memory (summary tasks)"),
        (
            (
                "llm-worker",
                "llm-worker-{tier}",
                f"{CONCURRENT}; a result is published only by the owner",
            ),
        ),
        "One generation for a worker of the tier (cheap or frontier).",
    ),
    Topic(
        "llm.results",
        LlmResult,
        "conversation id",
        ("llm-worker",),
        (("orchestrator", "orchestrator", f"{CONCURRENT}; one record at a time per key"),),
        "A finished generation (text, tool calls, usage, cost or error).",
    ),
    Topic(
        "memory.summaries",
        LlmResult,
        "conversation id",
        ("llm-worker (tasks whose result topic it is)",),
        (
            (
                "memory",
                "memory-summaries",
                "FastStream subscriber: committed after the handler (NACK)",
            ),
        ),
        "Results of memory's summary tasks.",
    ),
    Topic(
        "chat.turns",
        CompletedTurn,
        "conversation id",
        ("orchestrator",),
        (("memory", "memory", f"{CONCURRENT}, after MongoDB acknowledged; one at a time per key"),),
        "A completed turn, redacted, to store.",
    ),
    Topic(
        "chat.replies.{gateway_instance}",
        ChatEvent,
        "request id",
        ("llm-worker", "orchestrator"),
        (("gateway", None, "no group, never committed; only the owning replica reads it"),),
        "Sequenced reply events of one gateway replica's streams.",
    ),
    Topic(
        "chat.cancel",
        CancelGeneration,
        "request id",
        ("gateway",),
        (
            (
                "llm-worker",
                None,
                "no group (every worker reads all); FastStream, acknowledged first",
            ),
        ),
        "Stop the generation of a request.",
    ),
    Topic(
        "{topic}.dlq",
        DeadLetter,
        "the source record's key",
        ("the consumer of {topic}",),
        (("operator", None, "read and replayed by hand: docs/operations.md"),),
        "A record that could not be processed, with the reason.",
    ),
]

_SCALARS: dict[int, Any] = {
    FieldDescriptor.TYPE_STRING: str,
    FieldDescriptor.TYPE_BYTES: bytes,
    FieldDescriptor.TYPE_BOOL: bool,
    FieldDescriptor.TYPE_DOUBLE: float,
    FieldDescriptor.TYPE_FLOAT: float,
}


def proto_comments() -> dict[str, str]:
    """`Message.field` (and `Message`) -> the comment lines above it in proto/."""
    comments: dict[str, str] = {}
    for path in sorted(PROTO_DIR.glob("*.proto")):
        stack: list[str] = []
        pending: list[str] = []
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if line.startswith("//"):
                pending.append(line[2:].strip())
                continue
            opened = re.match(r"(message|enum)\s+(\w+)\s*\{", line)
            field = re.match(r"(?:repeated |optional )?[\w.<>, ]+\s+(\w+)\s*=\s*\d+", line)
            if opened:
                stack.append(opened.group(2))
                if pending:
                    comments[opened.group(2)] = " ".join(pending)
                if line.endswith("}"):
                    stack.pop()
            elif field and stack and pending:
                comments[f"{stack[-1]}.{field.group(1)}"] = " ".join(pending)
            elif line.startswith("}") and stack:
                stack.pop()
            pending = []
    return comments


def model_of(
    descriptor: Any, comments: dict[str, str], models: dict[str, type[BaseModel]]
) -> type[BaseModel]:
    """A pydantic model with the fields of a protobuf message (for the JSON schema only)."""
    if descriptor.full_name in models:
        return models[descriptor.full_name]
    fields: dict[str, Any] = {}
    for field in descriptor.fields:
        kind: Any
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            kind = dict[str, _SCALARS.get(value.type, str)]  # type: ignore[misc]
        elif field.message_type is not None:
            if field.message_type.full_name == "google.protobuf.Timestamp":
                kind = str
            else:
                kind = model_of(field.message_type, comments, models)
        elif field.enum_type is not None:
            kind = typing.Literal[tuple(v.name for v in field.enum_type.values)]
        else:
            kind = _SCALARS.get(field.type, int)
        if field.is_repeated and not isinstance(kind, type(dict[str, str])):
            kind = list[kind]
        note = comments.get(f"{descriptor.name}.{field.name}")
        # Not required (proto3 fields all have a zero value); the default is only documentary.
        fields[field.name] = (kind, Field(default=None, description=note))
    model = create_model(descriptor.name, __doc__=comments.get(descriptor.name), **fields)
    models[descriptor.full_name] = model
    return typing.cast(type[BaseModel], model)


def _handler(model: type[BaseModel]) -> Callable[..., Awaitable[None]]:
    async def handle(body: Any) -> None:
        """Documentation only."""

    handle.__annotations__["body"] = model
    return handle


def broker() -> KafkaBroker:
    """A broker (never connected) with every topic's producers and consumers declared."""
    kafka = KafkaBroker("127.0.0.1:9092", description="Apache Kafka (KRaft); 9092 locally")
    comments = proto_comments()
    models: dict[str, type[BaseModel]] = {}
    for topic in TOPICS:
        model = model_of(topic.payload.DESCRIPTOR, comments, models)
        payload = f"protobuf `switchboard.v1.{topic.payload.DESCRIPTOR.name}`"
        for producer in topic.producers:
            kafka.publisher(
                topic.name,
                title=f"{topic.name}:{producer.split()[0]}",
                description=f"{topic.description} Key: {topic.key}. Payload: {payload}.",
                schema=model,
            )
        for service, group, commit in topic.consumers:
            kafka.subscriber(
                topic.name,
                group_id=group,
                title=f"{topic.name}:{service}",
                description=(
                    f"{topic.description} Key: {topic.key}. Consumer group: {group or 'none'}."
                    f" Commit: {commit}."
                ),
            )(_handler(model))
    return kafka


def render() -> str:
    """The AsyncAPI 3.0 document, as YAML."""
    spec = AsyncAPI(
        broker(),
        title="Switchboard topics",
        version="1",
        description=(
            "The Kafka topics between Switchboard's services. Payloads are protobuf (proto/"
            "switchboard/v1); headers carry sb-type, sb-schema-version and the W3C trace"
            " context. Every topic name may carry a prefix (SWITCHBOARD_KAFKA_TOPIC_PREFIX)."
            " Generated by `make docs`; do not edit."
        ),
        schema_version="3.0.0",
    )
    # Sorted keys: FastStream's order of channels depends on hashing, which changes per process.
    return yaml.safe_dump(
        spec.to_specification().to_jsonable(), sort_keys=True, allow_unicode=True, width=100
    )
