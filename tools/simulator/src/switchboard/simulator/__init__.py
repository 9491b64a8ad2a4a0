"""A simulated LLM provider speaking the OpenAI and Anthropic HTTP APIs.

The official `openai` and `anthropic` SDKs run against it unchanged; replies are
deterministic, token counts come from a real tokenizer, and timing is configurable.
Run it with `python -m switchboard.simulator`, or in-process with `serve()`.
"""

from .app import RunningSimulator, create_app, serve
from .settings import Settings

__all__ = ["RunningSimulator", "Settings", "create_app", "serve"]
