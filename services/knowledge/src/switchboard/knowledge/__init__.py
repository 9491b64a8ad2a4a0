"""The knowledge service: each tenant's documents, chunked, embedded, searchable."""
