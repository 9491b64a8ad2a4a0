"""Answers from knowledge-base passages: when a prompt carries passages (the orchestrator's
`<passage id=".." title="..">` blocks in a system message), the simulated model opens its
reply by quoting the best-ranked passage (the first) and naming its title, so an
offline run shows a grounded answer with its citation."""

from __future__ import annotations

import html
import re
from typing import Any

_PASSAGE = re.compile(
    r'<passage id="(?P<id>[^"]+)" title="(?P<title>[^"]*)"[^>]*>\n?(?P<text>.*?)\n?</passage>',
    re.DOTALL,
)
_WORD = re.compile(r"\w+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
QUOTE_MAX_CHARS = 320


def _system_texts(body: dict[str, Any]) -> list[str]:
    """System text of an OpenAI (`messages` with role system/developer) or Anthropic
    (`system`) request body."""
    texts: list[str] = []
    system = body.get("system")
    if isinstance(system, str):
        texts.append(system)
    elif isinstance(system, list):
        texts.extend(b.get("text", "") for b in system if isinstance(b, dict))
    for message in body.get("messages") or []:
        if isinstance(message, dict) and message.get("role") in ("system", "developer"):
            content = message.get("content")
            if isinstance(content, str):
                texts.append(content)
            elif isinstance(content, list):
                texts.extend(p.get("text", "") for p in content if isinstance(p, dict))
    return [t for t in texts if isinstance(t, str)]


def grounded_opening(body: object, question: str) -> str | None:
    """The opening of an answer from the passages in `body`, or None when it has none."""
    if not isinstance(body, dict):
        return None
    passages = [m for text in _system_texts(body) for m in _PASSAGE.finditer(text)]
    if not passages:
        return None
    terms = {w.lower() for w in _WORD.findall(question) if len(w) > 2}

    def overlap(text: str) -> int:
        return len(terms & {w.lower() for w in _WORD.findall(text)})

    # The first passage is the best: the retriever ranks by meaning, which word overlap
    # cannot judge (a paraphrase shares few words with its answer).
    passage = passages[0]
    text = html.unescape(" ".join(passage["text"].split()))
    sentences = [s for s in _SENTENCE.split(text) if s]
    first = max(range(len(sentences)), key=lambda i: (overlap(sentences[i]), -i))
    quote = sentences[first]
    for following in sentences[first + 1 :]:
        if len(quote) + len(following) + 1 > QUOTE_MAX_CHARS:
            break
        quote = f"{quote} {following}"
    if len(quote) > QUOTE_MAX_CHARS:
        quote = quote[: QUOTE_MAX_CHARS - 3].rsplit(" ", 1)[0] + "..."
    title = html.unescape(passage["title"]) or "our documentation"
    return f'According to "{title}" [{passage["id"]}]: "{quote}"'
