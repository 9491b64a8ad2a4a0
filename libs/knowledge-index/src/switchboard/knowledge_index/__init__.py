"""Each tenant's searchable knowledge: the indexes (usearch and Tantivy), their MongoDB source
of truth, and the consumer of `knowledge.chunks` that keeps a replica of them current.

The knowledge service holds a replica to answer `SearchKnowledge`; the orchestrator may hold
one too, so that the search for a turn costs no network round trip (docs/knowledge.md).
"""
