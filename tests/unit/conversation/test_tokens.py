import pytest

from switchboard.conversation.tokens import count_tokens, remembering_counter

TEXTS = ["Where is my order 10023?", "Hello", "", "Ünïcödé and emoji 🎉 count too"]


@pytest.mark.parametrize("cache_size", [0, 2, 100])
def test_a_remembering_counter_counts_like_the_tokenizer(cache_size: int) -> None:
    count = remembering_counter(cache_size)
    for model in ("", "gpt-4o-mini", "claude-sonnet-4-6"):
        for _ in range(2):  # the second round is answered from memory
            assert [count(t, model) for t in TEXTS] == [count_tokens(t, model) for t in TEXTS]


def test_a_remembering_counter_keeps_at_most_its_size() -> None:
    count = remembering_counter(2)
    for text in TEXTS:
        count(text)
    info = count.cache_info()  # type: ignore[attr-defined]
    assert info.currsize == 2 and info.misses == len(TEXTS)
    count(TEXTS[-1])
    assert count.cache_info().hits == 1  # type: ignore[attr-defined]
