"""Token counting with an offline tokenizer (bpe-openai ships its vocabularies)."""

from functools import lru_cache
from typing import Protocol

import bpe_openai

DEFAULT_ENCODING = "o200k_base"
# Anthropic publishes no tokenizer; cl100k is the usual close estimate for Claude models.
_FAMILY_ENCODINGS = {"claude": "cl100k_base"}


@lru_cache(maxsize=32)
def encoding_for(model: str) -> bpe_openai.Encoding:
    """The tokenizer of `model`'s family; o200k when the model is unknown."""
    for prefix, name in _FAMILY_ENCODINGS.items():
        if model.startswith(prefix):
            return bpe_openai.get_encoding(name)
    try:
        # The name lookup covers every listed model; encoding_for_model misses some.
        name = bpe_openai.encoding_name_for_model(model)
    except (bpe_openai.UnsupportedModelError, KeyError):
        name = DEFAULT_ENCODING
    return bpe_openai.get_encoding(name)


def count_tokens(text: str, model: str = "") -> int:
    """How many tokens `text` is for `model`."""
    return len(encoding_for(model).encode_ordinary(text))


class CountTokens(Protocol):
    """What `count_tokens` is: text and model in, tokens out."""

    def __call__(self, text: str, model: str = "") -> int: ...


def remembering_counter(cache_size: int) -> CountTokens:
    """`count_tokens` that remembers the counts of the last `cache_size` texts: a context,
    like a summary plan, is mostly the previous turn's messages again."""
    counter: CountTokens = lru_cache(maxsize=cache_size)(count_tokens)
    return counter
