"""Token counting with an offline tokenizer (bpe-openai ships its vocabularies)."""

import contextlib
from functools import lru_cache
from typing import Protocol

import bpe_openai
from cachetools import LRUCache

DEFAULT_ENCODING = "o200k_base"
# Anthropic publishes no tokenizer; cl100k is the usual close estimate for Claude models.
_FAMILY_ENCODINGS = {"claude": "cl100k_base"}


@lru_cache(maxsize=8)
def _encoding_named(name: str) -> bpe_openai.Encoding:
    # One per vocabulary: bpe_openai builds a new one (its whole vocabulary again) per call.
    return bpe_openai.get_encoding(name)


@lru_cache(maxsize=32)
def encoding_for(model: str) -> bpe_openai.Encoding:
    """The tokenizer of `model`'s family; o200k when the model is unknown."""
    for prefix, name in _FAMILY_ENCODINGS.items():
        if model.startswith(prefix):
            return _encoding_named(name)
    try:
        # The name lookup covers every listed model; encoding_for_model misses some.
        name = bpe_openai.encoding_name_for_model(model)
    except (bpe_openai.UnsupportedModelError, KeyError):
        name = DEFAULT_ENCODING
    return _encoding_named(name)


def load_encodings() -> None:
    """Load every vocabulary a count may use, at start-up, before the start-up objects are
    frozen (`lifecycle.freeze_startup_objects`). Each holds its vocabulary in Python objects
    (200,000 for o200k): loaded on a first count instead, they were walked by every full
    garbage collection after it, 14-18 ms of CPU each in memory and the orchestrator."""
    for name in {DEFAULT_ENCODING, *_FAMILY_ENCODINGS.values()}:
        _encoding_named(name)


def count_tokens(text: str, model: str = "") -> int:
    """How many tokens `text` is for `model`."""
    return len(encoding_for(model).encode_ordinary(text))


class CountTokens(Protocol):
    """What `count_tokens` is: text and model in, tokens out."""

    def __call__(self, text: str, model: str = "") -> int: ...


# What a remembered count costs beyond its text (key tuple, int, cache node): an estimate.
COUNT_OVERHEAD_BYTES = 120


class RememberingCounter:
    """`count_tokens` that remembers the counts of recent texts, bounded in bytes (the texts'
    UTF-8 plus `COUNT_OVERHEAD_BYTES` each; least recently used go first): a context, like a
    summary plan, is mostly the previous turn's messages again."""

    def __init__(self, max_bytes: int) -> None:
        self._counts: LRUCache[tuple[str, str], tuple[int, int]] = LRUCache(
            max(max_bytes, 1), getsizeof=lambda entry: entry[1]
        )
        self._enabled = max_bytes > 0
        self.hits = 0
        self.misses = 0

    @property
    def currsize(self) -> int:
        """Bytes remembered now."""
        return int(self._counts.currsize)

    def __call__(self, text: str, model: str = "") -> int:
        key = (text, model)
        found = self._counts.get(key) if self._enabled else None
        if found is not None:
            self.hits += 1
            return found[0]
        self.misses += 1
        tokens = count_tokens(text, model)
        if self._enabled:
            size = len(text.encode()) + len(model) + COUNT_OVERHEAD_BYTES
            # One text larger than the whole cache is counted, not kept.
            with contextlib.suppress(ValueError):
                self._counts[key] = (tokens, size)
        return tokens


def remembering_counter(max_bytes: int) -> RememberingCounter:
    """A `RememberingCounter` of at most `max_bytes` (0: remembers nothing)."""
    return RememberingCounter(max_bytes)
