"""The HTTP routes: ``/v1/chat/completions``, ``/v1/responses``, ``/v1/models``, ``/metrics``, ``/health``.
A route only checks, plans and hands the plan to the chat pipeline (``tgi.pipeline.chat``)."""

from __future__ import annotations

import logging
import os

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from functionary.responses_types import ResponsesRequest
from tgi.api.auth import check_auth
from tgi.api.body import document_body, read_chat_request, read_json
from tgi.api.disconnect import unless_disconnected
from tgi.api.errors import request_id_of
from tgi.api.responses_call import create as create_response
from tgi.api.settings import Settings
from tgi.api.streaming import SSEResponse
from tgi.ops.metrics import render_merged
from tgi.ops.siblings import gather_snapshots
from tgi.pipeline.chat import new_request_id

__all__ = ["install_routes"]

log = logging.getLogger("gateway")


def install_routes(app: FastAPI, settings: Settings) -> None:
    _install_generation_routes(app, settings)
    _install_info_routes(app, settings)


def _install_generation_routes(app: FastAPI, settings: Settings) -> None:
    @app.post("/v1/chat/completions", openapi_extra=document_body(app))
    async def chat_completions(request: Request):
        check_auth(request, settings.api_keys)
        req = await read_chat_request(request, max_body_bytes=settings.max_body_bytes)
        runtime = request.app.state.runtime
        runtime.check_model(req.model)
        record = request.scope["state"]["record"]
        plan = await runtime.chat.plan_async(req, request_id=new_request_id(), record=record,
                                             body_bytes=request.scope["state"].get("body_bytes", 0))
        record.completion_id, record.model, record.stream = plan.request_id, plan.model, bool(req.stream)
        log.debug("request %s: %s, %d prompt tokens, stream=%s", request_id_of(request), plan.request_id,
                  plan.prompt_tokens, bool(req.stream))
        if req.stream:
            body = await runtime.chat.stream(plan)
            return SSEResponse(body, coalesce=plan.n == 1)  # perf: one socket write per TGI read
        # the client may leave (a timeout) while the answer is made: TGI's work is then cancelled at once
        return JSONResponse(await unless_disconnected(runtime.chat.complete(plan), request.receive))

    @app.post("/v1/responses", openapi_extra=document_body(app, ResponsesRequest))
    async def responses(request: Request):
        """OpenAI's Responses API over the same chat pipeline (tgi/api/responses_call.py); stateless."""
        check_auth(request, settings.api_keys)
        data = await read_json(request, max_body_bytes=settings.max_body_bytes)
        runtime = request.app.state.runtime
        state = request.scope["state"]
        work = create_response(runtime, data, record=state["record"], body_bytes=state.get("body_bytes", 0))
        answer = await unless_disconnected(work, request.receive)  # a client that leaves cancels TGI's work
        if isinstance(answer, dict):
            return JSONResponse(answer)
        return SSEResponse(answer)  # the events of one TGI read in one socket write, as for chat


def _install_info_routes(app: FastAPI, settings: Settings) -> None:
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
        state = request.app.state
        if state.worker is None:
            text = state.metrics.render(state.runtime.pool.stats())
        else:  # the sum over the workers (tgi/ops/siblings.py)
            own = state.metrics.snapshot(state.runtime.pool.stats())
            text = render_merged(await gather_snapshots(state.worker.directory, state.worker.index, own))
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/health")
    async def health(request: Request):
        runtime = request.app.state.runtime
        status = await runtime.health()
        worker = request.app.state.worker
        if worker is not None:  # this worker's pool: each worker checks the endpoints on its own
            status["gateway"].update(worker=worker.index, workers=worker.count, pid=os.getpid())
        code = 200 if status["tgi"]["healthy"] else 503
        return JSONResponse({"status": "ok" if code == 200 else "degraded", **status}, status_code=code)
