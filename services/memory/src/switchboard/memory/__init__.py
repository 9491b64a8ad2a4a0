"""The memory service: durable conversations and their context windows."""
