"""Kafka topic names (see shared/ARCHITECTURE.md, "Topics").

All names can carry a prefix (`SWITCHBOARD_KAFKA_TOPIC_PREFIX`), so that several
independent deployments, such as a test run beside `make up`, can share one cluster.
"""

from dataclasses import dataclass
from pathlib import Path

TIERS = ("cheap", "frontier")


@dataclass(frozen=True)
class Topics:
    """The topic names of one deployment."""

    prefix: str = ""

    @property
    def chat_requests(self) -> str:
        return f"{self.prefix}chat.requests"

    @property
    def llm_results(self) -> str:
        return f"{self.prefix}llm.results"

    @property
    def chat_turns(self) -> str:
        return f"{self.prefix}chat.turns"

    @property
    def chat_cancel(self) -> str:
        return f"{self.prefix}chat.cancel"

    @property
    def memory_summaries(self) -> str:
        return f"{self.prefix}memory.summaries"

    @property
    def knowledge_chunks(self) -> str:
        return f"{self.prefix}knowledge.chunks"

    def llm_tasks(self, tier: str) -> str:
        """The task topic of one model tier."""
        return f"{self.prefix}llm.tasks.{tier}"

    def chat_replies(self, gateway_instance: str) -> str:
        """The reply topic owned by one gateway instance."""
        return f"{self.prefix}chat.replies.{gateway_instance}"


def read_topic_specs(path: Path, prefix: str = "") -> list[tuple[str, int]]:
    """(name, partitions) of each topic in a `name partitions` file such as
    deploy/local/kafka/topics.txt (`#` starts a comment), names under `prefix`."""
    specs = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, partitions = line.split()
            specs.append((prefix + name, int(partitions)))
    return specs


def dead_letter(topic: str) -> str:
    """Where messages of `topic` that could not be processed go."""
    return f"{topic}.dlq"
