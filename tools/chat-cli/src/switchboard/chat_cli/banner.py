"""The opening of an interactive chat: what runs where, four messages to try, the commands."""

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from .settings import ChatCliSettings


@dataclass(frozen=True)
class Suggestion:
    """A message to try and what it shows."""

    message: str
    shows: str


# Each one is checked against the local demo tenant (deploy/local/tenants.yaml) by
# tests/e2e/test_demo_chat.py: the simulator calls order_status for the first, the router's
# classifier scores the second at or above its threshold, and the
# orchestrator's escalation rule hands the third to a person before any model runs, and the
# fourth is answered from the demo knowledge base (deploy/local/knowledge/demo) with its source.
SUGGESTIONS = (
    Suggestion("Where is my order A12345?", "a tool call: order_status asks the order service"),
    Suggestion(
        "My laptop shows a blue screen after the latest driver update, then restarts. Can "
        "you work out what is going on and walk me through fixing it?",
        "a complex question, routed to the frontier tier",
    ),
    Suggestion("I'd like to talk to a person, please.", "a handoff to a human, with a ticket"),
    Suggestion(
        "How long do I have to return an item?",
        "an answer grounded in the company's documents, citing its source",
    ),
)

COMMANDS = (
    ("/help", "this list"),
    ("/new", "start a new conversation"),
    ("/tier auto|cheap|frontier", "pin the tier of the next messages (auto: the router decides)"),
    ("1, 2, 3, 4", "send that suggested message"),
    ("/quit", "leave (Ctrl-D too)"),
)

# The gateway's OpenAI-compatible API and web demo page, on the port of
# `ChatCliSettings.http_url` (15080 locally), listed only when that port answers.
HTTP_API_PATH = "/v1"
DEMO_PAGE_PATH = "/"


def port_answers(url: str, timeout_s: float) -> bool:
    """Whether something accepts a TCP connection at the host and port of `url`."""
    parts = urlsplit(url if "://" in url else f"tcp://{url}")
    if not parts.hostname:
        return False
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((parts.hostname, port), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def banner(settings: ChatCliSettings, answers: Callable[[str], bool] | None = None) -> str:
    """The banner's text (plain; the caller dims it on a terminal)."""

    def probe(url: str) -> bool:
        return port_answers(url, settings.probe_timeout_s)

    check = answers or probe
    real = [n for n in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY") if os.environ.get(n)]
    models = (
        f"models: real providers ({', '.join(real)} set)"
        if real
        else "models: the bundled simulator (set OPENAI_API_KEY / ANTHROPIC_API_KEY for real ones)"
    )
    lines = [
        "Switchboard is running here: gateway, orchestrator, llm-workers (cheap, frontier), "
        "memory and knowledge on Kafka, FerretDB and Redis;",
        f"{models}.",
        f"  gRPC       {settings.target}  (switchboard.v1.ChatService, tenant: demo)",
    ]
    base = settings.http_url.rstrip("/")
    if check(base):
        lines.append(f"  HTTP       {base}{HTTP_API_PATH}  (OpenAI-compatible)")
        lines.append(f"  demo page  {base}{DEMO_PAGE_PATH}")
    if check(settings.traces_url):
        lines.append(f"  traces     {settings.traces_url}  (one trace per turn)")
    lines.append("Try:")
    for number, suggestion in enumerate(SUGGESTIONS, start=1):
        lines.append(f"  {number}. {suggestion.message}")
        lines.append(f"     {suggestion.shows}")
    lines.append("Type 1 to 4 to send one; /help lists the commands; /quit or Ctrl-D leaves.")
    return "\n".join(lines) + "\n"


def help_text() -> str:
    """What /help prints."""
    width = max(len(name) for name, _ in COMMANDS)
    return "".join(f"  {name:<{width}}  {what}\n" for name, what in COMMANDS)
