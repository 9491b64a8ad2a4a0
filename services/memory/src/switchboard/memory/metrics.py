"""Prometheus metrics of the memory service, all in one place."""

from prometheus_client import Counter

TURNS = Counter("switchboard_memory_turns", "Turns from chat.turns by outcome", ["outcome"])
CONTEXTS = Counter("switchboard_memory_contexts", "GetContext answers by source", ["source"])
SUMMARIES = Counter("switchboard_memory_summaries", "Summary tasks by outcome", ["outcome"])
EXPIRED = Counter("switchboard_memory_expired_conversations", "Conversations removed by retention")
