"""What the engine remembers about a turn between a task and its result, and how it is
serialised for the state store (protobuf bytes beside a JSON document)."""

import json
from dataclasses import dataclass, field

from switchboard.orchestrator.router import Route
from switchboard.v1.events_pb2 import LlmTask, TurnRequest


@dataclass
class TurnState:
    """What the engine remembers between a task and its result."""

    turn: TurnRequest
    task: LlmTask
    route: Route
    # The user message as stored (redacted of everything).
    stored_message: str
    previous_task_id: str = ""
    tool_rounds: int = 0
    texts: list[str] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    exchanges: list[dict[str, str]] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    cascaded: bool = False
    cache_key: str = ""
    ticket_id: str = ""
    # Knowledge-base passages given to the model, for the answer's citations.
    citations: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> str:
        """Everything but the protobuf messages, which are stored as bytes beside it."""
        return json.dumps(
            {
                "route": [
                    self.route.tier,
                    self.route.reason,
                    self.route.score,
                    self.route.classified,
                    list(self.route.signals),
                ],
                "stored_message": self.stored_message,
                "previous_task_id": self.previous_task_id,
                "tool_rounds": self.tool_rounds,
                "texts": self.texts,
                "usage": [self.input_tokens, self.output_tokens, self.cost_usd],
                "exchanges": self.exchanges,
                "flags": self.flags,
                "cascaded": self.cascaded,
                "cache_key": self.cache_key,
                "ticket_id": self.ticket_id,
                "citations": self.citations,
            }
        )

    @classmethod
    def from_parts(cls, turn: bytes, task: bytes, meta: str) -> "TurnState":
        data = json.loads(meta)
        tier, reason, score, classified, signals = data["route"]
        input_tokens, output_tokens, cost = data["usage"]
        return cls(
            turn=TurnRequest.FromString(turn),
            task=LlmTask.FromString(task),
            route=Route(tier, reason, score, classified, tuple(signals)),
            stored_message=data["stored_message"],
            previous_task_id=data["previous_task_id"],
            tool_rounds=data["tool_rounds"],
            texts=data["texts"],
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=cost,
            exchanges=data["exchanges"],
            flags=data["flags"],
            cascaded=data["cascaded"],
            cache_key=data["cache_key"],
            ticket_id=data["ticket_id"],
            citations=data.get("citations", []),
        )
