"""Prometheus metrics of a replica of the indexes (in whichever process holds it)."""

from prometheus_client import Counter, Gauge

CHUNKS = Gauge("switchboard_knowledge_chunks", "Chunks in this replica's indexes")
CHANGES = Counter(
    "switchboard_knowledge_changes", "Chunk changes seen by this replica by outcome", ["outcome"]
)
