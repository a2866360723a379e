"""The ``/emulator/...`` control routes (mixin of ``Emulator``)."""

from __future__ import annotations

import json

from .common import FAULT_SWITCHES, coerce_switch
from .replies import parse_reply


class ControlRoutes:
    """Request log, state, fault switches, script and reset."""

    async def get_requests(self, conn, request) -> None:
        conn.respond_json(200, {"requests": list(self.requests)})

    async def delete_requests(self, conn, request) -> None:
        cleared = len(self.requests)
        self.requests.clear()
        conn.respond_json(200, {"cleared": cleared})

    def state(self) -> dict:
        return {"in_flight": self.in_flight, "cancelled": self.counts["cancelled"],
                "completed": self.counts["tgi_request_success"], "requests": self.counts["requests"],
                "connections": self.connections, "script_remaining": len(self.script), "faults": dict(self.faults)}

    async def get_state(self, conn, request) -> None:
        conn.respond_json(200, self.state())

    async def get_faults(self, conn, request) -> None:
        conn.respond_json(200, {"faults": self.faults})

    async def post_faults(self, conn, request) -> None:
        try:
            changes = json.loads(request.body or b"{}")
            if not isinstance(changes, dict):
                raise ValueError("faults must be a JSON object")
            updated = dict(self.faults)
            for key, value in changes.items():
                name = key.replace("-", "_")
                if name not in FAULT_SWITCHES:
                    raise ValueError(f"unknown fault switch {key!r}; known: {sorted(FAULT_SWITCHES)}")
                updated[name] = self.cli_faults[name] if value is None else coerce_switch(name, value)
        except ValueError as exc:
            conn.respond_json(400, {"error": str(exc)})
            return
        self.faults = updated
        conn.respond_json(200, {"faults": self.faults})

    async def delete_faults(self, conn, request) -> None:
        self.faults = dict(self.cli_faults)
        conn.respond_json(200, {"faults": self.faults})

    async def get_script(self, conn, request) -> None:
        conn.respond_json(200, {"replies": [{"tokens": [t.as_dict() for t in r.tokens]} for r in self.script]})

    async def post_script(self, conn, request) -> None:
        try:
            body = json.loads(request.body or b"{}")
            replies = body.get("replies") if isinstance(body, dict) else body
            if not isinstance(replies, list):
                raise ValueError('the body must be {"replies": [...]} or a list of replies')
            parsed = [parse_reply(item, self.limits.eos_texts) for item in replies]
        except ValueError as exc:
            conn.respond_json(400, {"error": str(exc)})
            return
        self.script.extend(parsed)
        conn.respond_json(200, {"queued": len(self.script)})

    async def delete_script(self, conn, request) -> None:
        cleared = len(self.script)
        self.script.clear()
        conn.respond_json(200, {"cleared": cleared})

    async def get_model(self, conn, request) -> None:
        if self.model is None:
            conn.respond_json(404, {"error": "not in model mode (--model-dir)"})
            return
        conn.respond_json(200, self.model.describe())

    async def post_model(self, conn, request) -> None:
        if self.model is None:
            conn.respond_json(404, {"error": "not in model mode (--model-dir)"})
            return
        try:
            self.model.set_rules(json.loads(request.body or b"{}"))
        except ValueError as exc:
            conn.respond_json(400, {"error": str(exc)})
            return
        conn.respond_json(200, self.model.describe())

    async def post_reset(self, conn, request) -> None:
        self.script.clear()
        self.requests.clear()
        in_flight = self.in_flight
        self.reset_counters()
        self.in_flight = in_flight
        self.faults = dict(self.cli_faults)
        if self.model is not None:
            self.model.rules = self.model.file_rules
        conn.respond_json(200, self.state())
