"""The generation routes' answers: ``/generate`` JSON and ``/generate_stream`` events, with faults."""

from __future__ import annotations

import asyncio
import math
import random
import time

from .bodies import GenRequest, TgiError, invalid
from .common import GENERATION_FAILURE, compact
from .connection import Connection
from .plan import Plan, top_tokens
from .tokenizer import default_logprob
from .validation import Valid


class GenerationRoutes:
    """Mixin of ``Emulator``: answering a validated generation."""

    async def _plain(self, conn, req: GenRequest, entry: dict, *, as_list: bool) -> None:
        started = time.monotonic()
        try:
            best_of = req.params.get("best_of")
            if best_of is not None and best_of > 1:
                if self.limits.max_best_of == 1:
                    raise invalid("`best_of` != 1 is not allowed for this endpoint")
                if best_of > self.limits.max_best_of:
                    raise invalid(f"`best_of` must be > 0 and <= {self.limits.max_best_of}. Given: {best_of}")
            valid, plan = await self._start(req, entry)
        except TgiError as exc:
            self._fail(entry, exc)
            conn.respond_json(exc.status, exc.payload())
            return
        try:
            queued = time.monotonic()
            for index, delay in enumerate(plan.delays):
                if delay > 0:
                    await conn.sleep(delay)
                if conn.closed:
                    self._cancelled(entry)
                    return
                if plan.fault_at == index:
                    self._plain_fault(conn, plan, entry)
                    return
            body = self._plain_body(valid, plan)
            self._finish(entry, plan, "ok")
            conn.respond_json(200, [body] if as_list else body, headers=self._timing_headers(
                req, valid, plan, started, queued))
        finally:
            self.in_flight -= 1

    def _plain_fault(self, conn, plan: Plan, entry: dict) -> None:
        if plan.fault == "reset_after":
            entry["outcome"] = "reset"
            conn.reset()
            return
        if plan.fault == "fail_after":
            error = TgiError(GENERATION_FAILURE, "generation")
        else:
            error = TgiError("Incomplete generation", "incomplete_generation")
        self._fail(entry, error)
        conn.respond_json(error.status, error.payload())

    def _plain_body(self, valid: Valid, plan: Plan) -> dict:
        body = {"generated_text": self._generated_text(valid, plan.tokens)}
        if valid.details or valid.prefill_details:
            details = {"finish_reason": plan.finish, "generated_tokens": len(plan.tokens),
                       "seed": valid.seed if valid.sampling else None, "prefill": self._prefill(valid),
                       "tokens": [token.as_dict() for token in plan.tokens]}
            if valid.best_of > 1:
                details["best_of_sequences"] = [
                    {"generated_text": body["generated_text"], "finish_reason": plan.finish,
                     "generated_tokens": len(plan.tokens), "seed": random.getrandbits(64), "prefill": [],
                     "tokens": details["tokens"]} for _ in range(valid.best_of - 1)]
            if valid.top_n:
                details["top_tokens"] = [top_tokens(token, valid.top_n) for token in plan.tokens]
            body["details"] = details
        return body

    def _prefill(self, valid: Valid) -> list:
        if not (valid.prefill_details and self.limits.enable_prefill_logprobs):
            return []
        tokens = self.tokenizer.encode(valid.inputs)[-valid.input_length:]
        return [{"id": t["id"], "text": t["text"], "logprob": None if i == 0 else default_logprob(t["text"])}
                for i, t in enumerate(tokens)]

    def _timing_headers(self, req, valid, plan, started: float, queued: float) -> list:
        now = time.monotonic()
        total, inference = now - started, now - queued
        return [("x-compute-type", self.limits.compute_type), ("x-compute-time", repr(total)),
                ("x-compute-characters", len(req.inputs)), ("x-total-time", int(total * 1000)),
                ("x-validation-time", int((queued - started) * 1000)), ("x-queue-time", 0),
                ("x-inference-time", int(inference * 1000)),
                ("x-time-per-token", int(inference * 1000 / max(len(plan.tokens), 1))),
                ("x-prompt-tokens", valid.input_length), ("x-generated-tokens", len(plan.tokens))]

    async def _stream(self, conn, req: GenRequest, entry: dict) -> None:
        conn.start_chunked(200, [("content-type", "text/event-stream"), ("cache-control", "no-cache"),
                                 ("x-compute-type", self.limits.compute_type),
                                 ("x-compute-characters", len(req.inputs)), ("x-accel-buffering", "no")])
        prefix = b"data:" if self.faults["legacy_sse"] else b"data: "
        try:
            best_of = req.params.get("best_of")
            if best_of is not None and best_of != 1:
                raise invalid("`best_of` != 1 is not supported when streaming tokens")
            if req.params.get("decoder_input_details"):
                raise invalid("`decoder_input_details` == true is not supported when streaming tokens")
            valid, plan = await self._start(req, entry)
        except TgiError as exc:
            self._fail(entry, exc)
            conn.write_chunk(prefix + compact(exc.payload()) + b"\n\n", last=True)
            return
        try:
            await self._stream_tokens(conn, prefix, valid, plan, entry)
        finally:
            self.in_flight -= 1

    async def _stream_tokens(self, conn, prefix: bytes, valid: Valid, plan: Plan, entry: dict) -> None:
        last = len(plan.tokens) - 1
        for index, token in enumerate(plan.tokens):
            await self._wait_token(conn, plan.delays[index])
            if conn.closed:
                self._cancelled(entry)
                return
            if plan.fault_at == index:
                self._stream_fault(conn, prefix, plan, entry)
                return
            event = {"index": index + 1, "token": token.as_dict()}
            if valid.top_n:
                event["top_tokens"] = top_tokens(token, valid.top_n)
            if index < last:
                event["generated_text"] = event["details"] = None
                conn.write_chunk(prefix + compact(event) + b"\n\n")
                await conn.drain()
                if not plan.delays[index]:
                    await asyncio.sleep(0)  # let other streams run
                continue
            event["generated_text"] = self._generated_text(valid, plan.tokens)
            event["details"] = self._stream_details(valid, plan)
            self._finish(entry, plan, "ok")
            conn.write_chunk(prefix + compact(event) + b"\n\n", last=True)

    def _stream_details(self, valid: Valid, plan: Plan):
        if not valid.details:
            return None
        details = {"finish_reason": plan.finish, "generated_tokens": len(plan.tokens),
                   "seed": valid.seed if valid.sampling else None}
        if self.limits.version_tuple >= (2, 3, 0):
            details["input_length"] = valid.input_length
        return details

    async def _wait_token(self, conn: Connection, delay: float) -> None:
        """Wait ``delay`` before a token, writing the ``:`` keep-alive comment after each quiet gap."""
        if delay <= 0:
            return
        deadline = conn.loop.time() + delay
        gap = self.faults["keep_alive"]
        while not conn.closed:
            now = conn.loop.time()
            due = conn.last_write + gap if gap > 0 else math.inf
            if due >= deadline:
                await conn.sleep(deadline - now)
                return
            await conn.sleep(max(due - now, 0.0))
            if not conn.closed:
                conn.write_chunk(b":\n\n")

    def _stream_fault(self, conn, prefix: bytes, plan: Plan, entry: dict) -> None:
        if plan.fault == "reset_after":
            entry["outcome"] = "reset"
            conn.reset()
        elif plan.fault == "cut_after":
            entry["outcome"] = "cut"
            conn.end_chunked()
        else:
            if plan.fault == "fail_after":
                error = TgiError(GENERATION_FAILURE, "generation")
            else:
                error = TgiError("Incomplete generation stream", "incomplete_generation_stream")
            self._fail(entry, error)
            conn.write_chunk(prefix + compact(error.payload()) + b"\n\n", last=True)
