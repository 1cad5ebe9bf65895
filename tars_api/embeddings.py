"""``POST /v1/embeddings`` through the node (PC2's sentence-transformers model).

The node sends vectors as raw little-endian float32, which is exactly OpenAI's
``encoding_format: "base64"`` (what the official client asks for by default), so
those bytes are passed on without unpacking.
"""

from __future__ import annotations

import base64
from typing import Any

from memory.context import approx_tokens
from node_daemon.client import NodeError, NodeUnavailable
from node_daemon.protocol import unpack_vectors
from tars_api.errors import ApiError
from tars_api.runtime import Runtime
from tars_api.schemas import EmbeddingsRequest

MAX_INPUTS = 2048
ALIASES = ("tars", "tars-embed", "default")


def _node_error(exc: NodeError) -> ApiError:
    status = {"bad_request": 400, "too_large": 413, "busy": 503}.get(exc.code, 502)
    kind = "invalid_request_error" if status < 500 else "server_error"
    return ApiError(status, f"the node refused: {exc}", type_=kind, code=f"node_{exc.code}")


def _accepts(model: str | None, node_model: str | None) -> bool:
    if not model or model.lower() in ALIASES:
        return True
    if node_model is None:
        return False
    wanted = model.lower().rsplit("/", 1)[-1]
    return wanted in (node_model.lower(), node_model.lower().rsplit("/", 1)[-1])


async def create_embeddings(rt: Runtime, body: EmbeddingsRequest) -> dict[str, Any]:
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    if not texts:
        raise ApiError(400, "input: give at least one text", param="input", code="invalid_value")
    if len(texts) > MAX_INPUTS:
        raise ApiError(
            400, f"input: at most {MAX_INPUTS} texts", param="input", code="invalid_value"
        )
    for i, text in enumerate(texts):
        if not text.strip():
            raise ApiError(400, f"input[{i}] is empty", param="input", code="invalid_value")
        if len(text) > rt.config.api.max_message_chars:
            raise ApiError(
                400,
                f"input[{i}] is longer than {rt.config.api.max_message_chars} characters",
                param="input",
                code="message_too_long",
            )
    client = rt.node.client
    if client is None:
        raise ApiError(
            503,
            f"embeddings need the node, which is {rt.node.state}",
            type_="server_error",
            code="node_unavailable",
        )
    try:
        health = await client.health()
        node_model = health.get("model")
        if not _accepts(body.model, node_model):
            raise ApiError(
                404,
                f"embedding model {body.model!r} is not served here; the node runs "
                f"{node_model or 'no model yet'} (or say model 'tars')",
                param="model",
                code="model_not_found",
            )
        result = await client.call("embed", {"texts": texts})
    except NodeUnavailable as exc:
        raise ApiError(
            503, f"the node is unreachable: {exc}", type_="server_error", code="node_unavailable"
        ) from None
    except NodeError as exc:
        raise _node_error(exc) from None
    dim, count = int(result["dim"]), int(result["count"])
    if body.dimensions is not None and body.dimensions != dim:
        raise ApiError(
            400,
            f"dimensions: this model makes {dim}-dimensional vectors",
            param="dimensions",
            code="invalid_value",
        )
    raw: bytes = result["vectors"]
    size = dim * 4
    if body.encoding_format == "base64":
        vectors: list[Any] = [
            base64.b64encode(raw[i * size : (i + 1) * size]).decode("ascii") for i in range(count)
        ]
    else:
        vectors = unpack_vectors(raw, dim)
    tokens = sum(approx_tokens(t) for t in texts)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)
        ],
        "model": str(result.get("model") or node_model),
        # The node's tokenizer is not here: an upper-bound estimate.
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


__all__ = ["create_embeddings"]
