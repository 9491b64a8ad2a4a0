"""The LLM worker: calls a provider and relays the tokens to the client."""
