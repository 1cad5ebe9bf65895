"""`Authorization: Bearer KEY` on every endpoint but /health, then the key's rate limit.

Used as a FastAPI dependency by the HTTP routes and called directly by the WebSocket
route, which refuses a bad key with a real 401 before accepting the connection.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers

from tars_api.errors import ApiError
from tars_api.keys import ApiKey, KeyFileError, KeyStore
from tars_api.limits import RateLimiter

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="tars"'}


def bearer(headers: Headers | Mapping[str, str]) -> str | None:
    value = headers.get("authorization") or ""
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def check_key(headers: Headers | Mapping[str, str], keys: KeyStore) -> ApiKey:
    """The caller's key, or ApiError 401."""
    token = bearer(headers)
    if token is None:
        raise ApiError(
            401,
            "this endpoint needs an API key: send Authorization: Bearer KEY "
            "(make one with `tars api-key new NAME`)",
            code="invalid_api_key",
            headers=CHALLENGE,
        )
    try:
        entry = keys.verify(token)
    except KeyFileError as exc:
        raise ApiError(500, str(exc), type_="server_error", code="keys_file") from None
    if entry is None:
        raise ApiError(
            401,
            "invalid API key (mistyped or revoked; `tars api-key list` shows the keys)",
            code="invalid_api_key",
            headers=CHALLENGE,
        )
    return entry


def check_rate(entry: ApiKey, limiter: RateLimiter) -> None:
    wait = limiter.check(entry.name)
    if wait is not None:
        seconds = max(1, math.ceil(wait))
        raise ApiError(
            429,
            f"too many requests for key {entry.name!r}: retry in {seconds} s "
            "([api] rate_limit_per_minute, rate_limit_burst)",
            type_="rate_limit_error",
            code="rate_limit_exceeded",
            headers={"Retry-After": str(seconds)},
        )


# Declares the scheme in the OpenAPI document (the Authorize button of /docs); the
# header itself is checked below, so every failure says what to do.
_scheme = HTTPBearer(auto_error=False, description="An API key from `tars api-key new NAME`.")


async def require_key(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(_scheme)]
) -> ApiKey:
    """The dependency: a valid key within its rate limit."""
    state = request.app.state
    entry = check_key(request.headers, state.keys)
    check_rate(entry, state.limiter)
    request.state.api_key = entry
    return entry


def optional_key(request: Request) -> ApiKey | None:
    """For /health: the caller's key if it sent a valid one (details), else None."""
    try:
        return check_key(request.headers, request.app.state.keys)
    except ApiError:
        return None


__all__ = ["bearer", "check_key", "check_rate", "optional_key", "require_key"]
