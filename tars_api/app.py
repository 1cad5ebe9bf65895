"""The app factory: ``make_api(config)`` is shared by `tars serve`, the tests and the
benchmark, as ``make_app`` is for the TUI.

Layers, outermost first: the Host allow-list (and WebSocket origins), CORS (only when
``[api] cors_origins`` names some), the body size limit, then the routes; auth and
the rate limit are a dependency of every route but /health and the docs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from tars_api import routes_openai, routes_tars, ws
from tars_api.errors import install_error_handlers
from tars_api.limits import BodyLimit
from tars_api.runtime import Runtime
from tars_api.security import HostCheck, allowed_hosts
from tars_assistant.model_router import BackendEngine as Engine
from tars_core.config import Config

DESCRIPTION = """\
TARS's assistant, with its memory, over HTTP: OpenAI-compatible routes under `/v1`
(point any OpenAI client at `http://HOST:PORT/v1`), TARS's own routes for stored
conversations, memory and projects, and a WebSocket at `/ws/chat`.

Every route but `/health` needs `Authorization: Bearer KEY`; make a key with
`tars api-key new NAME` (it is shown once) and use **Authorize** to try routes here.
"""


def make_api(
    config: Config,
    *,
    engine: Engine | None = None,
    config_path: Path | None = None,
) -> FastAPI:
    runtime = Runtime(config, engine=engine, config_path=config_path)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(
        title="TARS local API",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.keys = runtime.keys
    app.state.limiter = runtime.limiter
    install_error_handlers(app)
    app.include_router(routes_openai.router)
    app.include_router(routes_tars.router)
    app.include_router(routes_tars.public)
    app.include_router(ws.router)

    api = config.api
    # add_middleware wraps what is there: the last added runs first.
    app.add_middleware(BodyLimit, max_bytes=api.max_body_bytes)
    if api.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(api.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Tars-Project", "X-Tars-Memory"],
            expose_headers=["Retry-After"],
            allow_credentials=False,
        )
    app.add_middleware(HostCheck, hosts=allowed_hosts(config), origins=api.cors_origins)
    return app


__all__ = ["make_api"]
