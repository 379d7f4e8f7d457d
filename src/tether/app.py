"""The ASGI app factory: wires settings, store, bus, engine and routes together."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from tether import __version__
from tether.agents import check_model, load_agent
from tether.api.errors import BearerAuthMiddleware, BodyLimitMiddleware, install_error_handlers
from tether.api.routes import health_router, router
from tether.api.ui import mount_ui
from tether.bus.memory import MemoryBus
from tether.config import Settings
from tether.engine import Engine
from tether.store.sqlite import SQLiteStore


def create_app(settings: Settings) -> FastAPI:
    """A Tether app; the store opens and runs resume when the app's lifespan starts."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    agent = load_agent(settings.agent, settings.data_dir)
    if settings.model is not None:
        check_model(settings.model)
    store = SQLiteStore(settings.database_path)
    store.lock()  # fail now, with a clear message, if another server uses this data directory
    engine = Engine(store, MemoryBus(), agent, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await engine.start()
        try:
            yield
        finally:
            await engine.stop()

    app = FastAPI(
        title="Tether",
        version=__version__,
        description="Durable AI-agent runs with exact-resume event streams.",
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(health_router)
    app.include_router(router)
    mount_ui(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(BearerAuthMiddleware, token=settings.token)
    return app
