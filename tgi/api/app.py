"""``create_app(settings)``: the FastAPI app, its lifespan (the TGI side opened by ``tgi.api.runtime``), error
handlers, routes and middleware. No globals: everything lives on ``app.state``."""

from __future__ import annotations

from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from tgi.api.errors import install_error_handlers
from tgi.api.fastpath import ChatFastPath
from tgi.api.middleware import RequestContextMiddleware
from tgi.api.routes import install_routes
from tgi.api.settings import Settings
from tgi.api.startup import report_startup_failure
from tgi.ops.metrics import Metrics
from tgi.ops.siblings import serve_snapshots

__all__ = ["create_app"]


def create_app(settings: Settings, *, worker=None) -> FastAPI:
    """``worker``: this process's :class:`tgi.api.workers.WorkerSlot` under ``--workers`` (None: the only one)."""
    from tgi.api.runtime import open_runtime  # the TGI side: tokenizer, template, pool, launcher

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        stack = AsyncExitStack()
        try:
            # on failure open_runtime has closed what it opened (a container it started included) when this returns
            app.state.runtime = runtime = await stack.enter_async_context(
                open_runtime(settings, start_backends_here=worker is None))
        except BaseException as exc:
            app.state.exit_code = report_startup_failure(exc, debug=settings.log_level.lower() == "debug")
            raise
        async with stack:
            if worker is not None:  # the other workers read this one's figures for /metrics
                await stack.enter_async_context(serve_snapshots(
                    worker.directory, worker.index, lambda: app.state.metrics.snapshot(runtime.pool.stats())))
            yield

    app = FastAPI(title="Functionary TGI gateway", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.worker = worker
    install_error_handlers(app)
    install_routes(app, settings)
    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
            allow_headers=["*"], expose_headers=["x-request-id"],
        )
    inner = app if settings.cors_origins else ChatFastPath(app)  # perf: the chat route without FastAPI's layers
    return RequestContextMiddleware(inner, app.state.metrics, worker=worker)  # type: ignore[return-value]
