"""The orchestrator: context, routing and the life of a turn."""
