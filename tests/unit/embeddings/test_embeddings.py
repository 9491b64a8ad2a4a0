"""The embedding implementations: the bundled local model, the OpenAI-compatible client
against the simulator's /v1/embeddings, and the query cache."""

import asyncio
from collections.abc import AsyncIterator, Sequence

import numpy as np
import pytest

from switchboard.embeddings import (
    EmbeddingError,
    EmbeddingSettings,
    QueryEmbeddings,
    Vectors,
    create_embedder,
)
from switchboard.embeddings.local import LocalEmbedder
from switchboard.embeddings.remote import OpenAIEmbedder
from switchboard.simulator import RunningSimulator, Settings, serve


@pytest.fixture(scope="module")
def local() -> LocalEmbedder:
    return LocalEmbedder()


def test_local_model_reproduces_the_reference_similarity(local: LocalEmbedder) -> None:
    # The sentence-transformers documentation's example for all-MiniLM-L6-v2 gives 0.7553
    # for this pair; an encoder that got a layer wrong lands far from it.
    v = local.embed_sync(["A man is eating food.", "A man is eating a piece of bread."])
    assert v.shape == (2, 384)
    assert float(v[0] @ v[1]) == pytest.approx(0.7553, abs=0.002)


def test_fewer_layers_and_tokens_give_cheaper_different_vectors(local: LocalEmbedder) -> None:
    encoder = local.encoder
    texts = ["Why was I charged twice on my last bill?", "Where is my order?"]
    full = encoder.encode(texts)
    assert np.allclose(encoder.encode(texts, layers=len(encoder.layers)), full, atol=1e-6)
    first = encoder.encode(texts, layers=1)
    assert first.shape == full.shape
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(first, full, atol=1e-2)
    # Truncated to the first word pieces ([CLS] ... [SEP] kept): the same as the prefix text.
    ids = encoder.token_ids(texts[:1])[0]
    short = encoder.encode(texts[:1], layers=1, max_tokens=5)
    prefix = encoder.tokenizer.decode(ids[1:4])
    assert np.allclose(short, encoder.encode([prefix], layers=1), atol=1e-5)


def test_local_vectors_are_unit_length_and_rank_paraphrases_first(local: LocalEmbedder) -> None:
    v = local.embed_sync(
        [
            "How long do I have to send something back?",
            "Items may be returned within 30 days of delivery for a refund.",
            "The weather in Paris is sunny today.",
        ]
    )
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3


async def test_local_batches_match_single_texts(local: LocalEmbedder) -> None:
    texts = ["short", "a somewhat longer sentence about refunds and returns", "mid length text"]
    together = await local.embed(texts)
    alone = np.vstack([await local.embed([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert (await local.embed([])).shape == (0, 384)


def test_long_texts_are_truncated_not_rejected(local: LocalEmbedder) -> None:
    v = local.embed_sync(["word " * 5_000])
    assert v.shape == (1, 384)
    assert len(local.encoder.token_ids(["word " * 5_000])[0]) == 256


@pytest.fixture
async def simulator() -> AsyncIterator[RunningSimulator]:
    async with serve(Settings(host="127.0.0.1", port=0, ttft_ms=0, token_delay_ms=0)) as sim:
        yield sim


async def test_openai_compatible_embedder_against_the_simulator(
    simulator: RunningSimulator,
) -> None:
    settings = EmbeddingSettings(
        provider="openai", openai_base_url=simulator.openai_base_url, openai_batch_size=2
    )
    embedder = create_embedder(settings)
    assert isinstance(embedder, OpenAIEmbedder)
    try:
        v = await embedder.embed(["refund policy", "refund policy", "shipping times"])
        assert v.shape == (3, 256)
        assert embedder.dimensions == 256
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(v[0], v[1])
        assert v[0] @ v[2] < 0.99
    finally:
        await embedder.close()


async def test_openai_embedder_asks_for_dimensions(simulator: RunningSimulator) -> None:
    embedder = OpenAIEmbedder("m", base_url=simulator.openai_base_url, dimensions=64)
    try:
        assert (await embedder.embed(["x"])).shape == (1, 64)
    finally:
        await embedder.close()


async def test_openai_embedder_failure_is_an_embedding_error(simulator: RunningSimulator) -> None:
    # An empty string is refused by the endpoint (400); no retries for a client error.
    embedder = OpenAIEmbedder("m", base_url=simulator.openai_base_url, max_retries=0)
    try:
        with pytest.raises(EmbeddingError, match="embeddings endpoint failed"):
            await embedder.embed([""])
    finally:
        await embedder.close()


class CountingEmbedder:
    """A fake embedder that counts calls."""

    name = "counting"
    dimensions = 2

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def embed(self, texts: Sequence[str]) -> Vectors:
        self.calls.append(list(texts))
        return np.ones((len(texts), 2), dtype=np.float32) / np.sqrt(2)

    async def close(self) -> None:
        return None


async def test_query_cache_reuses_normalised_queries_and_is_bounded() -> None:
    inner = CountingEmbedder()
    cache = QueryEmbeddings(inner, max_entries=2, ttl_s=60)
    await cache.embed("Where is my order?")
    await cache.embed("  where is   my ORDER? ")
    assert (cache.hits, cache.misses) == (1, 1)
    await cache.embed("b")
    await cache.embed("c")
    await cache.embed("where is my order?")  # pushed out by b and c
    assert cache.misses == 4
    vector = await cache.embed("c")
    assert not vector.flags.writeable


async def test_query_cache_can_be_disabled() -> None:
    inner = CountingEmbedder()
    cache = QueryEmbeddings(inner, max_entries=0, ttl_s=60)
    await cache.embed("a")
    await cache.embed("a")
    assert len(inner.calls) == 2


class GatedEmbedder(CountingEmbedder):
    """Embeds only once released, so that callers overlap."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def embed(self, texts: Sequence[str]) -> Vectors:
        await self.release.wait()
        return await super().embed(texts)


async def test_concurrent_requests_for_one_text_share_one_computation() -> None:
    inner = GatedEmbedder()
    cache = QueryEmbeddings(inner, max_entries=0, ttl_s=60)  # no cache: sharing alone
    first = asyncio.ensure_future(cache.embed("Where is my order?"))
    second = asyncio.ensure_future(cache.embed("where is my order?"))
    await asyncio.sleep(0)
    inner.release.set()
    one, two = await asyncio.gather(first, second)
    assert inner.calls == [["where is my order?"]]
    assert one is two and (cache.hits, cache.misses) == (1, 1)
    await cache.embed("where is my order?")  # finished: computed again without a cache
    assert len(inner.calls) == 2


async def test_a_caller_that_gives_up_does_not_cancel_the_shared_computation() -> None:
    inner = GatedEmbedder()
    cache = QueryEmbeddings(inner, max_entries=4, ttl_s=60)
    leaving = asyncio.ensure_future(cache.embed("refund"))
    staying = asyncio.ensure_future(cache.embed("refund"))
    await asyncio.sleep(0)
    leaving.cancel()
    inner.release.set()
    vector = await staying
    assert leaving.cancelled() and vector.shape == (2,)
    assert await cache.embed("refund") is vector  # cached by the shared computation
