"""The ASGI app factory: wires settings, agents, auth, store, bus, engine and routes together."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from tether import __version__
from tether.agents import AgentLike, Agents, check_model, load_agents
from tether.api.auth import (
    Auth,
    AuthFunction,
    AuthMiddleware,
    custom_auth,
    load_auth_function,
    no_auth,
    token_auth,
    users_auth,
)
from tether.api.edge import HostCheckMiddleware, OriginCheckMiddleware, SecurityHeadersMiddleware
from tether.api.errors import BodyLimitMiddleware, install_error_handlers
from tether.api.limits import RateLimitMiddleware
from tether.api.openapi import describe
from tether.api.protocols import ag_ui, ai_sdk
from tether.api.routes import health_router, router
from tether.api.ui import mount_ui
from tether.bus import Bus
from tether.bus.memory import MemoryBus
from tether.config import Settings, new_worker_id
from tether.engine import Engine
from tether.store import Store
from tether.tracing import configure_tracing


class ConfigError(ValueError):
    """Settings that cannot work together; the message says how to fix them."""


def create_app(
    settings: Settings | None = None,
    *,
    agents: AgentLike | Mapping[str, AgentLike] | None = None,
    auth: AuthFunction | None = None,
) -> FastAPI:
    """A Tether app (ASGI), to serve or to mount inside your own app.

    `agents`: an Agent or ServedAgent, or a mapping name → one of them (the first is the default);
    None loads `settings.agents` (the demo agent if that is empty). `auth`: a function given the
    request, returning the caller's user id or None (401); None uses `settings.token`,
    `settings.users_file` or `settings.auth`. The store opens and runs resume when the app's lifespan
    starts; mounted inside another app (whose lifespan a mounted app does not get), enter
    `running(app)` in the host's lifespan.
    """
    settings = settings or Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.worker_id is None:
        settings = replace(settings, worker_id=new_worker_id())
    served = load_agents(settings.agents, settings.data_dir) if agents is None else Agents.of(agents)
    if settings.model is not None:
        check_model(settings.model)
    caller_auth = custom_auth(auth) if auth is not None else auth_of(settings)
    tracing = configure_tracing()
    if tracing is not None:
        served.instrument(tracing)
    engine = Engine(
        open_store(settings),
        open_bus(settings),
        served,
        settings,
        named_users=caller_auth.names_users,
        tracer_provider=tracing,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with running(app):
            yield

    app = FastAPI(
        title="Tether",
        version=__version__,
        description="Durable AI-agent runs with exact-resume event streams.",
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.state.settings = settings
    app.state.auth = caller_auth
    protected = ("/v1",) if settings.metrics_public else ("/v1", "/metrics")
    describe(
        app,
        caller_auth,
        protected,
        served.served,
        rate_limited=bool(settings.rate_limit),
        attachment_types=settings.attachment_types,
        max_attachments=settings.max_attachments,
    )
    install_error_handlers(app)
    app.include_router(health_router)
    app.include_router(router)
    app.include_router(ag_ui.router)
    app.include_router(ai_sdk.router)
    mount_ui(app)
    # Outermost last: the Host check first, then the headers every response gets, CORS, the Origin
    # check, authentication, the rate per user, and the body limit nearest the routes.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, message_bytes=settings.max_message_bytes)
    if settings.rate_limit:
        app.add_middleware(RateLimitMiddleware, per_minute=settings.rate_limit)
    app.add_middleware(AuthMiddleware, auth=caller_auth, protected=protected)
    app.add_middleware(OriginCheckMiddleware, allowed_origins=settings.cors_origins)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["authorization", "content-type", "last-event-id"],
            expose_headers=["www-authenticate", "x-vercel-ai-ui-message-stream"],
            max_age=600,
        )
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(HostCheckMiddleware, bound_host=settings.host, allowed=settings.allowed_hosts)
    return app


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[None]:
    """The Tether app's engine, started (store opened, agents' lifespans entered, runs resumed) and, on
    exit, stopped (runs handed over or checkpointed). A served app does this in its own lifespan."""
    engine: Engine = app.state.engine
    await engine.start()
    try:
        yield
    finally:
        await engine.stop()


def auth_of(settings: Settings) -> Auth:
    """How callers are authenticated: at most one of --token, --users and --auth."""
    given = [
        flag
        for flag, value in (("--token", settings.token), ("--users", settings.users_file), ("--auth", settings.auth))
        if value
    ]
    if len(given) > 1:
        raise ConfigError(f"{' and '.join(given)} cannot be used together: choose one way to authenticate")
    if settings.token:
        return token_auth(settings.token)
    if settings.users_file is not None:
        return users_auth(settings.users_file)
    if settings.auth:
        return custom_auth(load_auth_function(settings.auth))
    return no_auth()


def open_store(settings: Settings) -> Store:
    """The store the settings name (not yet opened: that happens in the app's lifespan)."""
    url = settings.database
    if settings.uses_postgres:
        from tether.store.postgres import PostgresStore

        if settings.redis is None:
            raise ConfigError(
                "PostgreSQL needs Redis for live streams and control between workers: add --redis redis://HOST:6379"
            )
        return PostgresStore(url)  # type: ignore[arg-type]
    if url is not None and not url.startswith("sqlite:///"):
        raise ConfigError(f"--database must be postgresql://… or sqlite:///PATH, got {url!r}")
    if settings.workers > 1:
        raise ConfigError(
            "--workers above 1 needs PostgreSQL (--database postgresql://…) and Redis: SQLite is one process"
        )
    from tether.store.sqlite import SQLiteStore

    store = SQLiteStore(settings.database_path)
    store.lock()  # fail now, with a clear message, if another server uses this database
    return store


async def check_services(settings: Settings) -> None:
    """Connect to PostgreSQL (migrating its schema) and Redis once, or check the SQLite file, before
    serving, so that a server that cannot use them says so plainly and exits, rather than failing in
    its lifespan."""
    if settings.uses_postgres:
        store = open_store(settings)
        await store.open()
        await store.close()
    else:
        from tether.store.sqlite import SQLiteDatabase

        SQLiteDatabase(settings.database_path).check()
    if settings.redis is not None:
        bus = open_bus(replace(settings, worker_id=f"{settings.worker_id or 'tether'}-check"))
        await bus.start()
        await bus.close()


def open_bus(settings: Settings) -> Bus:
    if settings.redis is None:
        return MemoryBus()
    from tether.bus.redis import RedisBus

    assert settings.worker_id is not None, "create_app names the worker before it makes the bus"
    return RedisBus(settings.redis, prefix=settings.redis_prefix, worker_id=settings.worker_id)
