import pytest

from switchboard.conversation.tokens import (
    COUNT_OVERHEAD_BYTES,
    _encoding_named,
    count_tokens,
    encoding_for,
    load_encodings,
    remembering_counter,
)

TEXTS = ["Where is my order 10023?", "Hello", "", "Ünïcödé and emoji 🎉 count too"]


@pytest.mark.parametrize("max_bytes", [0, 300, 100_000])
def test_a_remembering_counter_counts_like_the_tokenizer(max_bytes: int) -> None:
    count = remembering_counter(max_bytes)
    for model in ("", "gpt-4o-mini", "claude-sonnet-4-6"):
        for _ in range(2):  # the second round is answered from memory
            assert [count(t, model) for t in TEXTS] == [count_tokens(t, model) for t in TEXTS]


def test_a_remembering_counter_is_bounded_in_bytes() -> None:
    each = COUNT_OVERHEAD_BYTES + 30
    count = remembering_counter(2 * each)  # room for two short texts
    for text in TEXTS:
        count(text)
    assert count.misses == len(TEXTS) and 0 < count.currsize <= 2 * each
    count(TEXTS[-1])
    assert count.hits == 1  # the newest is still there
    count(TEXTS[0])
    assert count.misses == len(TEXTS) + 1  # the oldest went
    huge = remembering_counter(200)
    huge("word " * 100)  # larger than the whole cache: counted, not kept
    assert huge.currsize == 0


def test_models_of_one_vocabulary_share_one_tokenizer_loaded_at_start() -> None:
    load_encodings()
    loaded = _encoding_named.cache_info().currsize
    # bpe_openai builds a whole new vocabulary per call: one per model would be one each.
    assert encoding_for("gpt-4o-mini") is encoding_for("gpt-4o") is encoding_for("")
    assert encoding_for("claude-sonnet-4-6") is not encoding_for("gpt-4o")
    # Every vocabulary a count can use was loaded by load_encodings: none is built later.
    assert _encoding_named.cache_info().currsize == loaded == 2
