"""The OpenAI embeddings wire format: `POST /v1/embeddings`.

Vectors are deterministic feature hashes of the text's words and word pairs (the same text
always gets the same vector; texts that share words point the same way), which is all a
simulator needs: it lets the OpenAI-compatible embedding path run end to end offline.
Accepts `encoding_format` `float` and `base64` (the SDK's default when numpy is installed).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import math
import re
import struct

from aiohttp import web

from .journal import Journal
from .openai_api import NO_KEY_MESSAGE, error_response
from .openai_requests import UNPARSABLE_MESSAGE
from .replies import count_tokens
from .state import read_request
from .wire import UNPARSABLE, InvalidRequest, is_int, json_response, json_type_name

API = "openai"
DEFAULT_DIMENSIONS = 256
MAX_DIMENSIONS = 3072
MAX_INPUTS = 2048
_WORD = re.compile(r"\w+")


def embed_text(text: str, dimensions: int) -> list[float]:
    """A unit-length vector: each word and adjacent word pair adds +-1 to a hashed slot."""
    vector = [0.0] * dimensions
    words = _WORD.findall(text.lower())
    features = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
    for feature in features:
        digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
        slot = int.from_bytes(digest[:4], "little") % dimensions
        vector[slot] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0.0:  # no words: a fixed direction, not a zero vector
        vector[0], norm = 1.0, 1.0
    return [v / norm for v in vector]


def _inputs(body: dict[str, object]) -> list[str]:
    value = body.get("input")
    if isinstance(value, str):
        items: list[object] = [value]
    elif isinstance(value, list) and value:
        items = list(value)
    else:
        raise InvalidRequest(
            f"'input' must be a string or a non-empty array, got {json_type_name(value)}",
            param="input",
        )
    if len(items) > MAX_INPUTS:
        raise InvalidRequest(f"'input' has more than {MAX_INPUTS} items", param="input")
    texts: list[str] = []
    for item in items:
        if isinstance(item, str):
            texts.append(item)
        elif is_int(item):  # an array of token ids is one input
            return [" ".join(str(i) for i in items)]
        elif isinstance(item, list) and all(is_int(i) for i in item):
            texts.append(" ".join(str(i) for i in item))
        else:
            raise InvalidRequest(
                f"'input' items must be strings or token arrays, got {json_type_name(item)}",
                param="input",
            )
    if any(not t for t in texts):
        raise InvalidRequest("'input' cannot contain an empty string", param="input")
    return texts


async def embeddings(request: web.Request) -> web.StreamResponse:
    """`POST /v1/embeddings`."""
    _, body, entry = await read_request(request, API)
    if not request.headers.get("Authorization", "").lower().startswith("bearer "):
        Journal.finish(entry, "error 401")
        return error_response(401, NO_KEY_MESSAGE)
    if body is UNPARSABLE or not isinstance(body, dict):
        Journal.finish(entry, "error 400")
        return error_response(400, UNPARSABLE_MESSAGE)
    try:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise InvalidRequest("you must provide a model parameter", param="model")
        texts = _inputs(body)
        dimensions = body.get("dimensions", DEFAULT_DIMENSIONS)
        if not is_int(dimensions) or not 1 <= int(str(dimensions)) <= MAX_DIMENSIONS:
            raise InvalidRequest(
                f"'dimensions' must be an integer from 1 to {MAX_DIMENSIONS}", param="dimensions"
            )
        fmt = body.get("encoding_format", "float")
        if fmt not in ("float", "base64"):
            raise InvalidRequest(
                "'encoding_format' must be 'float' or 'base64'", param="encoding_format"
            )
    except InvalidRequest as exc:
        Journal.finish(entry, f"error {exc.status}")
        return error_response(exc.status, exc.message, param=exc.param, code=exc.code)
    size = int(str(dimensions))
    data = []
    for index, text in enumerate(texts):
        vector = embed_text(text, size)
        encoded: object = (
            base64.b64encode(struct.pack(f"<{size}f", *vector)).decode()
            if fmt == "base64"
            else vector
        )
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    tokens = sum(count_tokens(t) for t in texts)
    Journal.finish(entry, "ok")
    return json_response(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        },
        headers={"openai-version": "2020-10-01"},
    )
