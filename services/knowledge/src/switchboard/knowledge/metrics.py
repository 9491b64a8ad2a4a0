"""Prometheus metrics of the knowledge service, all in one place."""

from prometheus_client import Counter, Histogram

INGESTED = Counter(
    "switchboard_knowledge_documents", "Document upserts and deletions by outcome", ["outcome"]
)
QUERY_VECTORS = Counter(
    "switchboard_knowledge_query_vectors",
    "Search query vectors by origin: given by the caller (the orchestrator) or embedded here",
    ["origin"],
)
SEARCH_SECONDS = Histogram(
    "switchboard_knowledge_search_seconds",
    "Time of a search (query embedding and index lookups)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
)
