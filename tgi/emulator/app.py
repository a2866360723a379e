"""The emulator application: routes, TGI's plain handlers, the reply source and the request log."""

from __future__ import annotations

import asyncio
import collections
import time

from .bodies import GenRequest, Rejection, TgiError, overloaded, parse_generate_request, parse_json_body
from .common import TEXT_PLAIN, Log
from .connection import Connection, Request
from .control import ControlRoutes
from .demo import demo_reply
from .generation import GenerationRoutes
from .plan import Plan, make_plan
from .replies import Reply, make_token
from .tokenizer import Tokenizer
from .validation import Limits, Valid, validate


class Emulator(GenerationRoutes, ControlRoutes):
    """Routes, TGI's handlers, the script, the request log, counters and fault switches."""

    def __init__(self, limits: Limits, tokenizer: Tokenizer, faults: dict, script: list, log: Log,
                 model=None) -> None:
        self.limits, self.tokenizer, self.log = limits, tokenizer, log
        self.model = model  # model mode: a model.Model, whose tokenizer is then ``tokenizer``
        self.cli_faults = dict(faults)
        self.faults = dict(faults)
        self.script = collections.deque(script)
        self.requests = collections.deque(maxlen=10000)
        self.connections = 0
        self.default_eos = make_token(limits.default_eos, True, limits.eos_texts)
        self._demo_cache: dict = {}
        self.reset_counters()
        self.routes = {
            "/": {"GET": self.health, "POST": self.compat},
            "/health": {"GET": self.health}, "/ping": {"GET": self.health},
            "/info": {"GET": self.info}, "/metrics": {"GET": self.metrics}, "/v1/models": {"GET": self.models},
            "/generate": {"POST": self.generate}, "/generate_stream": {"POST": self.generate_stream},
            "/tokenize": {"POST": self.tokenize},
            "/emulator/requests": {"GET": self.get_requests, "DELETE": self.delete_requests},
            "/emulator/state": {"GET": self.get_state},
            "/emulator/faults": {"GET": self.get_faults, "POST": self.post_faults, "DELETE": self.delete_faults},
            "/emulator/script": {"GET": self.get_script, "POST": self.post_script, "DELETE": self.delete_script},
            "/emulator/reset": {"POST": self.post_reset},
            "/emulator/model": {"GET": self.get_model, "POST": self.post_model},
        }

    def reset_counters(self) -> None:
        self.in_flight = 0
        self.counts = collections.Counter()

    async def handle(self, conn: Connection, request: Request) -> None:
        methods = self.routes.get(request.path)
        if methods is None:
            conn.respond(404)
            return
        handler = methods.get(request.method)
        if handler is None:
            conn.respond(405)
            return
        if request.too_large:
            conn.respond(413, b"Failed to buffer the request body: length limit exceeded", content_type=TEXT_PLAIN)
            return
        await handler(conn, request)

    # ---- plain routes
    async def health(self, conn, request) -> None:
        if self.faults["unhealthy"]:
            conn.respond_json(503, {"error": "unhealthy", "error_type": "healthcheck"})
        else:
            conn.respond(200)

    async def info(self, conn, request) -> None:
        conn.respond_json(200, self.info_body())

    def info_body(self) -> dict:
        lim, version = self.limits, self.limits.version_tuple
        body = {"model_id": lim.model_id, "model_sha": None}
        if version < (2, 4, 0):
            body.update(model_dtype="torch.float16", model_device_type="cuda")
        body.update(model_pipeline_tag=lim.pipeline_tag, max_concurrent_requests=self.faults["max_concurrent_requests"],
                    max_best_of=lim.max_best_of, max_stop_sequences=lim.max_stop_sequences)
        body["max_input_tokens" if version >= (2, 1, 0) else "max_input_length"] = lim.max_input_tokens
        body["max_total_tokens"] = lim.max_total_tokens
        if version < (2, 3, 0):
            body.update(waiting_served_ratio=0.3, max_batch_total_tokens=lim.max_total_tokens * 4,
                        max_waiting_tokens=20, max_batch_size=None)
        body.update(validation_workers=2, max_client_batch_size=lim.max_client_batch_size,
                    router="text-generation-router", version=lim.version, sha=None, docker_label=None)
        return body

    async def models(self, conn, request) -> None:
        model_id = self.limits.model_id
        conn.respond_json(200, {"object": "list", "data": [{"id": model_id, "object": "model", "created": 0,
                                                            "owned_by": model_id}]})

    async def metrics(self, conn, request) -> None:
        lines = []
        for name in ("tgi_request_count", "tgi_request_success"):
            lines += [f"# TYPE {name} counter", f"{name} {self.counts[name]}"]
        lines.append("# TYPE tgi_request_failure counter")
        for key, value in sorted(self.counts.items()):
            if key.startswith("failure:"):
                lines.append(f'tgi_request_failure{{err="{key[8:]}"}} {value}')
        lines += ["# TYPE tgi_queue_size gauge", "tgi_queue_size 0",
                  "# TYPE tgi_batch_current_size gauge", f"tgi_batch_current_size {self.in_flight}"]
        conn.respond(200, ("\n".join(lines) + "\n").encode(), content_type="text/plain; version=0.0.4")

    async def tokenize(self, conn, request) -> None:
        if not self._authorized(request):
            conn.respond(401)
            return
        try:
            req = parse_generate_request(parse_json_body(request.headers, request.body), compat=False)
        except Rejection as exc:
            conn.respond(exc.status, exc.text.encode("utf-8"), content_type=TEXT_PLAIN)
            return
        conn.respond_json(200, self.tokenizer.encode(req.inputs))

    # ---- generation routes
    async def generate(self, conn, request) -> None:
        await self._generation_route(conn, request, "generate")

    async def generate_stream(self, conn, request) -> None:
        await self._generation_route(conn, request, "stream")

    async def compat(self, conn, request) -> None:
        await self._generation_route(conn, request, "compat")

    def _authorized(self, request) -> bool:
        key = self.limits.api_key
        return not key or request.headers.get("authorization", "").lower() == f"bearer {key}".lower()

    def _log_request(self, request: Request) -> dict:
        self.counts["requests"] += 1
        entry = {"seq": self.counts["requests"], "route": request.path, "method": request.method,
                 "headers": dict(request.headers), "body": None, "received_at": time.time(), "outcome": None,
                 "input_length": None, "finish_reason": None, "generated_tokens": None}
        self.requests.append(entry)
        return entry

    async def _generation_route(self, conn, request, route: str) -> None:
        entry = self._log_request(request)
        if not self._authorized(request):
            entry["outcome"] = "unauthorized"
            conn.respond(401)
            return
        try:
            body = parse_json_body(request.headers, request.body)
            entry["body"] = body
            req = parse_generate_request(body, compat=route == "compat")
        except Rejection as exc:
            if entry["body"] is None:
                entry["raw_body"] = request.body[:65536].decode("utf-8", "replace")
            entry["outcome"] = "rejected"
            conn.respond(exc.status, exc.text.encode("utf-8"), content_type=TEXT_PLAIN)
            return
        self.counts["tgi_request_count"] += 1
        if route == "compat" and req.params.get("return_full_text") is None:
            req.params["return_full_text"] = self.limits.pipeline_tag in (None, "text-generation")
        if req.stream or route == "stream":
            await self._stream(conn, req, entry)
        else:
            await self._plain(conn, req, entry, as_list=route == "compat")

    def _acquire(self) -> None:
        if self.faults["overload"] or self.in_flight >= self.faults["max_concurrent_requests"]:
            raise overloaded()
        self.in_flight += 1

    async def _next_reply(self, valid: Valid) -> Reply:
        if self.script and not self.faults["demo"]:
            return self.script.popleft()
        if self.model is not None:  # the greedy model runs in a worker thread: the loop keeps serving
            tokens = await asyncio.get_running_loop().run_in_executor(
                None, self.model.generate, valid.inputs, valid.grammar, valid.limit)
            return Reply(tokens, source="model")
        if valid.grammar is not None:  # not cached: the same inputs get another answer without the grammar
            return demo_reply(valid.inputs, grammar=valid.grammar, eos_texts=self.limits.eos_texts)
        cached = self._demo_cache.get(valid.inputs)
        if cached is None:
            cached = demo_reply(valid.inputs, grammar=None, eos_texts=self.limits.eos_texts)
            if len(self._demo_cache) > 256:
                self._demo_cache.clear()
            self._demo_cache[valid.inputs] = cached
        return cached

    async def _start(self, req: GenRequest, entry: dict):
        """Permit, validation and the reply: (valid, plan). Raises TgiError."""
        self._acquire()
        try:
            valid = validate(req, self.limits, self.tokenizer)
            entry["input_length"] = valid.input_length
            reply = await self._next_reply(valid)
            if reply.error is not None:
                raise TgiError(reply.error["error"], reply.error.get("error_type", "generation"))
            return valid, make_plan(reply, valid, self.faults, self.default_eos)
        except BaseException:
            self.in_flight -= 1
            raise

    def _fail(self, entry: dict, error: TgiError) -> None:
        entry["outcome"] = error.error_type
        self.counts["failure:" + error.error_type] += 1

    def _finish(self, entry: dict, plan: Plan, outcome: str) -> None:
        entry.update(outcome=outcome, finish_reason=plan.finish, generated_tokens=len(plan.tokens))
        if outcome == "ok":
            self.counts["tgi_request_success"] += 1

    def _cancelled(self, entry: dict) -> None:
        entry["outcome"] = "cancelled"
        self.counts["cancelled"] += 1
        self.counts["failure:dropped"] += 1

    def _generated_text(self, valid: Valid, tokens: list) -> str:
        text = "".join(token.text for token in tokens if not token.special)
        return valid.inputs + text if valid.return_full_text else text
