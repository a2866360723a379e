"""The HTTP routes: ``/v1/chat/completions``, ``/v1/models``, ``/metrics``, ``/health``. A route only checks,
plans and hands the plan to the chat pipeline (``tgi.pipeline.chat``)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from functionary.errors import ModelNotFoundError
from tgi.api.auth import check_auth
from tgi.api.body import document_chat_body, read_chat_request
from tgi.api.errors import request_id_of
from tgi.api.settings import Settings
from tgi.pipeline.chat import new_request_id

__all__ = ["install_routes"]

log = logging.getLogger("gateway")


def install_routes(app: FastAPI, settings: Settings) -> None:
    @app.post("/v1/chat/completions", openapi_extra=document_chat_body(app))
    async def chat_completions(request: Request):
        check_auth(request, settings.api_keys)
        req = await read_chat_request(request, max_body_bytes=settings.max_body_bytes)
        runtime = request.app.state.runtime
        if req.model is not None and req.model not in runtime.model_names:
            raise ModelNotFoundError(
                f"The model '{req.model}' does not exist; this server serves '{settings.model_name}'.",
                param="model",
            )
        record = request.scope["state"]["record"]
        plan = runtime.chat.plan(req, request_id=new_request_id(), record=record)
        record.completion_id, record.model, record.stream = plan.request_id, plan.model, bool(req.stream)
        log.debug("request %s: %s, %d prompt tokens, stream=%s", request_id_of(request), plan.request_id, plan.prompt_tokens, bool(req.stream))
        if req.stream:
            body = await runtime.chat.stream(plan)
            return StreamingResponse(
                body, media_type="text/event-stream",
                headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
            )
        return JSONResponse(await runtime.chat.complete(plan))

    @app.get("/v1/models")
    async def models(request: Request):
        check_auth(request, settings.api_keys)
        runtime = request.app.state.runtime
        card = {
            "id": settings.model_name,
            "object": "model",
            "created": runtime.started,
            "owned_by": "functionary-tgi-gateway",
            "context_length": runtime.limits.max_total_tokens,
            "max_model_len": runtime.limits.max_total_tokens,
        }
        return {"object": "list", "data": [card]}

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request):
        text = request.app.state.metrics.render(request.app.state.runtime.pool.stats())
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/health")
    async def health(request: Request):
        runtime = request.app.state.runtime
        status = await runtime.health()
        code = 200 if status["tgi"]["healthy"] else 503
        return JSONResponse({"status": "ok" if code == 200 else "degraded", **status}, status_code=code)
