"""TGI faults through the emulator's switches, against the real gateway.

Every scenario sends requests (streaming and not) and classifies each answer:

* ``ok``: a normal completion (a stream ends with its finish chunk and ``[DONE]``);
* ``error <status> <type> <code>``: an OpenAI error body before the first byte;
* ``event <type> <code>``: a 200 stream that ends with one OpenAI error event and ``[DONE]``.

Anything else (a hang past the request's bound, a malformed answer, a broken connection) fails. Each
scenario states the outcomes it allows, then checks that the gateway serves an ordinary request normally
and that TGI has no request left in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.reliability.report import Report
from tests.reliability.stack import (
    CHAT,
    EOT,
    USER,
    emulator_on,
    gateway_command,
    model_dir_for,
    openai_error_problem,
    unexpected_errors,
)
from tests.support.gateway_proc import start_gateway
from tests.support.emulator_proc import EmulatorHandle, free_port

REQUEST_TIMEOUT = 3.0  # the gateway's --request-timeout in this suite
HANG_MARGIN = 4.0  # an answer later than its bound + this is a hang


@dataclass
class Outcome:
    kind: str  # "ok", "error", "event", "bad"
    detail: str
    elapsed: float
    content: str = ""

    @property
    def label(self) -> str:
        return f"{self.kind} {self.detail}".strip()


def words(text: str) -> list[dict]:
    return [{"text": piece} for piece in text.replace(" ", "\0 ").split("\0") if piece]


def reply(text: str, **extra) -> dict:
    """A v3.llama3 plain-text answer (without tools the prompt already ends with ``>>>all\\n``)."""
    return {"tokens": [*words(text), EOT], **extra}


async def call(base_url: str, *, stream: bool, bound: float, body: dict | None = None) -> Outcome:
    """One chat request, classified; never waits longer than ``bound`` + HANG_MARGIN."""
    body = {"messages": USER, **(body or {}), "stream": stream}
    started = time.monotonic()
    try:
        async with asyncio.timeout(bound + HANG_MARGIN):
            async with httpx.AsyncClient(timeout=None) as client:
                async with client.stream("POST", base_url + CHAT, json=body) as response:
                    raw = await response.aread()
    except TimeoutError:
        return Outcome("bad", f"hang: no complete answer in {bound + HANG_MARGIN:g} s", time.monotonic() - started)
    except httpx.HTTPError as exc:
        return Outcome("bad", f"broken connection: {exc!r}", time.monotonic() - started)
    elapsed = time.monotonic() - started
    if response.status_code != 200:
        problem = openai_error_problem(response.status_code, raw, response.headers.get("content-type", ""))
        if problem:
            return Outcome("bad", f"HTTP {response.status_code} not OpenAI-shaped: {problem}", elapsed)
        error = json.loads(raw)["error"]
        detail = f"{response.status_code} {error['type']} {error['code']}"
        if response.status_code == 503 and not response.headers.get("retry-after"):
            detail += " (no Retry-After)"
        return Outcome("error", detail, elapsed)
    return _classify_200(raw, stream=stream, elapsed=elapsed)


def _classify_200(raw: bytes, *, stream: bool, elapsed: float) -> Outcome:
    if not stream:
        message = json.loads(raw)["choices"][0]["message"]
        return Outcome("ok", "", elapsed, message.get("content") or json.dumps(message.get("tool_calls")))
    events = [line[6:] for line in raw.decode().split("\n") if line.startswith("data: ")]
    if not events or events[-1] != "[DONE]":
        return Outcome("bad", f"stream without [DONE]: {raw[-200:]!r}", elapsed)
    chunks = [json.loads(data) for data in events[:-1]]
    errors = [chunk for chunk in chunks if "error" in chunk]
    if errors:
        problem = openai_error_problem(500, json.dumps(errors[-1]).encode(), "application/json")
        if problem or len(errors) > 1 or chunks[-1] is not errors[-1]:
            return Outcome("bad", f"error event malformed or not last: {raw[-300:]!r}", elapsed)
        return Outcome("event", f"{errors[0]['error']['type']} {errors[0]['error']['code']}", elapsed)
    finished = [c for c in chunks if c.get("choices") and c["choices"][0].get("finish_reason")]
    if not finished:
        return Outcome("bad", f"stream without a finish_reason: {raw[-300:]!r}", elapsed)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    return Outcome("ok", "", elapsed, text)


class FaultRun:
    """The emulator on a fixed port (so it can be stopped and brought back) and a gateway in front of it."""

    def __init__(self, report: Report, tmp: Path) -> None:
        self.report = report
        self.tmp = tmp
        self.port = free_port()
        self.url = ""
        self.tgi: EmulatorHandle | None = None
        self.model_dir = model_dir_for("v3.llama3", tmp)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def gateway_args(self, *extra: str) -> list[str]:
        return gateway_command(self.model_dir, self.endpoint, "--request-timeout", str(REQUEST_TIMEOUT), *extra)

    def expect(self, name: str, outcome: Outcome, allowed: set[str], *, bound: float = REQUEST_TIMEOUT) -> None:
        ok = outcome.kind != "bad" and outcome.label in allowed and outcome.elapsed <= bound + HANG_MARGIN
        self.report.check(ok, f"{name}: got {outcome.label!r} after {outcome.elapsed:.2f}s, allowed {sorted(allowed)}")
        self.report.figures.setdefault("outcomes", {})[name] = f"{outcome.label} ({outcome.elapsed:.2f}s)"

    def request(self, name: str, allowed: set[str], *, stream: bool, bound: float = REQUEST_TIMEOUT,
                body: dict | None = None) -> Outcome:
        outcome = asyncio.run(call(self.url, stream=stream, bound=bound, body=body))
        self.expect(f"{name} [{'stream' if stream else 'plain'}]", outcome, allowed, bound=bound)
        return outcome

    def both(self, name: str, allowed_plain: set[str], allowed_stream: set[str], *, script: Callable[[], list] | None = None,
             retried: bool = False, **kwargs) -> None:
        """Both modes. ``retried``: the fault loses the endpoint before the client saw output, so the gateway
        may start the generation over (tgi/cluster/pool.py): the next scripted reply, RECOVERED, is then the answer."""
        for stream, allowed in ((False, allowed_plain), (True, allowed_stream)):
            if script is not None:
                self.tgi.control("DELETE", "/emulator/script")  # a RECOVERED reply left by a case not started over
                self.tgi.script(script() + ([reply(RECOVERED)] if retried else []))
            outcome = self.request(name, allowed | ({"ok"} if retried else set()), stream=stream, **kwargs)
            if retried and outcome.kind == "ok":
                self.report.check(outcome.content == RECOVERED, f"{name}: started over, but answered {outcome.content!r}")
                self.report.figures.setdefault("started over after a lost endpoint", []).append(
                    f"{name} [{'stream' if stream else 'plain'}]")

    def lost_endpoint(self, name: str, allowed_plain: set[str], allowed_stream: set[str], **fault: object) -> None:
        """Both modes over a long reply that ``fault`` (``reset_after``, ``cut_after``) ends early: the endpoint is
        lost, so the gateway may start over (``both(retried=True)``)."""
        self.both(name, allowed_plain, allowed_stream, script=lambda: [reply(LONG, **fault)], retried=True)

    def served_normally(self, after: str) -> None:
        """After a fault: TGI winds down, and an ordinary request gets an ordinary answer."""
        assert self.tgi is not None
        state = self.tgi.wait_state(lambda s: s["in_flight"] == 0, timeout=HANG_MARGIN)
        self.report.check(state["in_flight"] == 0, f"after {after}: TGI still has {state['in_flight']} requests in flight")
        self.tgi.reset()
        self.tgi.script([reply("Back to normal."), reply("Back to normal.")])
        for stream in (False, True):
            outcome = asyncio.run(call(self.url, stream=stream, bound=REQUEST_TIMEOUT))
            self.report.check(outcome.kind == "ok" and outcome.content == "Back to normal.",
                              f"after {after}: next request [{'stream' if stream else 'plain'}] got {outcome.label!r} "
                              f"{outcome.content!r}")


# ---------------------------------------------------------------------------------------------- scenarios

GEN = {"error 502 server_error generation_failed"}
GEN_EVENT = {"event server_error generation_failed"}
INCOMPLETE = {"error 502 server_error incomplete_generation_stream"}
INCOMPLETE_EVENT = {"event server_error incomplete_generation_stream"}
UNAVAILABLE = {"error 503 server_error service_unavailable"}
TIMEOUT = {"error 504 server_error request_timeout"}
TIMEOUT_EVENT = {"event server_error request_timeout"}
OVERLOADED = {"error 429 rate_limit_error overloaded"}
OK = {"ok"}
LONG = "one two three four five six seven eight nine ten eleven twelve"
RECOVERED = "Recovered after the fault."


def scenario_down_at_start(run: FaultRun) -> None:
    # TGI comes up 3 s after the gateway: the gateway waits, then serves
    started = time.monotonic()
    with start_gateway(run.gateway_args("--startup-timeout", "30"), wait=False) as gateway:
        time.sleep(1.0)
        run.report.check(gateway.process.poll() is None, "down at start: the gateway gave up while TGI was loading")
        with emulator_on(run.port, startup_delay=2.0) as tgi:
            gateway.wait_ready(30)
            run.report.figures["down at start: ready after (s)"] = round(time.monotonic() - started, 2)
            run.url, run.tgi = gateway.base_url, tgi
            run.served_normally("TGI down at start")
    # TGI never comes: the gateway exits non-zero within its start-up timeout, naming the endpoint
    started = time.monotonic()
    with start_gateway(run.gateway_args("--startup-timeout", "2"), wait=False) as gateway:
        try:
            code = gateway.process.wait(timeout=2 + 15)
        except Exception:
            code = None
        elapsed = time.monotonic() - started
        logs = gateway.logs()
    run.report.check(code not in (None, 0) and run.endpoint in logs,
                     f"TGI never up: gateway exit code {code} after {elapsed:.1f}s; endpoint named: {run.endpoint in logs}")
    run.report.figures["TGI never up: gateway exit (code, s)"] = (code, round(elapsed, 1))


def scenario_down_mid_run(run: FaultRun) -> None:
    assert run.tgi is not None
    # killed in the middle of a slow stream
    run.tgi.script([reply(LONG, delay_s=0.2)])

    async def killed_mid_stream() -> Outcome:
        task = asyncio.create_task(call(run.url, stream=True, bound=REQUEST_TIMEOUT))
        await asyncio.sleep(0.9)
        run.tgi.process.send_signal(signal.SIGKILL)
        return await task

    outcome = asyncio.run(killed_mid_stream())
    run.expect("TGI killed mid-stream", outcome, {"event server_error incomplete_generation_stream"})
    run.tgi.process.wait()
    # down: refused at once, 503 with Retry-After, both modes
    run.both("TGI down", UNAVAILABLE, UNAVAILABLE)
    run.tgi.stop()  # run_faults brings TGI back on the same port and checks the next request


def scenario_generation_errors(run: FaultRun) -> None:
    tgi = run.tgi
    run.both("generation error before the first token", GEN, GEN,
             script=lambda: [reply(LONG, fail_after=0)])
    run.both("generation error mid-stream", GEN, GEN_EVENT, script=lambda: [reply(LONG, fail_after=4)])
    cases = {
        "validation": ({"error 400 invalid_request_error None"},) * 2,
        "overloaded": (OVERLOADED,) * 2,
        "incomplete_generation": ({"error 502 server_error incomplete_generation"},) * 2,
        "some_new_error_type": ({"error 502 server_error None"},) * 2,
    }
    for error_type, (plain, streamed) in cases.items():
        run.both(f"TGI error_type {error_type}", plain, streamed,
                 script=lambda t=error_type: [{"error": {"error": f"scripted {t}", "error_type": t}}])
    tgi.faults(fail_after=2)
    run.both("fail_after switch", GEN, GEN_EVENT)
    tgi.faults(fail_after=None)


def scenario_overloaded(run: FaultRun) -> None:
    run.tgi.faults(overload=True)
    run.both("TGI overloaded (429)", OVERLOADED, OVERLOADED)
    run.tgi.faults(overload=None)
    # at TGI's concurrency limit: one slow request holds the only permit
    run.tgi.faults(max_concurrent_requests=1)
    run.tgi.script([reply(LONG, delay_s=0.1)])

    async def second_while_first_runs() -> tuple[Outcome, Outcome]:
        first = asyncio.create_task(call(run.url, stream=True, bound=REQUEST_TIMEOUT))
        await asyncio.sleep(0.3)
        second = await call(run.url, stream=False, bound=REQUEST_TIMEOUT)
        return await first, second

    first, second = asyncio.run(second_while_first_runs())
    run.expect("holder of the only permit", first, OK)
    run.expect("request over max_concurrent_requests", second, OVERLOADED)
    run.tgi.faults(max_concurrent_requests=None)


def scenario_reset_mid_stream(run: FaultRun) -> None:
    run.lost_endpoint("TCP reset before the first token", INCOMPLETE, INCOMPLETE, reset_after=0)
    # a stream that already sent text cannot start over: it must end with the error event
    run.lost_endpoint("TCP reset mid-stream", INCOMPLETE, INCOMPLETE_EVENT, reset_after=5)


def scenario_keep_alive_gaps(run: FaultRun) -> None:
    run.tgi.faults(keep_alive=0.05)
    run.both("keep-alive comments between slow tokens", OK, OK, script=lambda: [reply("slow but fine", delay_s=0.3)])
    run.both("keep-alive comments during a long prefill", OK, OK,
             script=lambda: [reply("after a long prefill", prefill_delay_s=1.5)])
    run.tgi.faults(keep_alive=None)


def scenario_empty_tokens(run: FaultRun) -> None:
    def script() -> list:
        tokens = [{"text": ""}, {"text": "Hé"}, {"text": ""},
                  {"text": "llo"}, {"text": ""}, EOT]
        return [{"tokens": tokens}]

    for stream in (False, True):
        run.tgi.script(script())
        outcome = run.request("empty-text tokens", OK, stream=stream)
        run.report.check(outcome.content == "Héllo", f"empty-text tokens: content {outcome.content!r}")
    run.tgi.faults(split_utf8=True)
    for stream in (False, True):
        run.tgi.script([reply("Grüße aus Köln 🙂")])
        outcome = run.request("split UTF-8 (empty token before each non-ASCII one)", OK, stream=stream)
        run.report.check(outcome.content == "Grüße aus Köln 🙂", f"split UTF-8: content {outcome.content!r}")
    run.tgi.faults(split_utf8=None)


def scenario_no_final_event(run: FaultRun) -> None:
    run.lost_endpoint("body ends without the final event", INCOMPLETE, INCOMPLETE_EVENT, cut_after=4)
    run.lost_endpoint("body ends before any token", INCOMPLETE, INCOMPLETE, cut_after=0)
    run.both("TGI's incomplete_generation_stream event", INCOMPLETE, INCOMPLETE_EVENT,
             script=lambda: [reply(LONG, incomplete_after=4)])


def scenario_past_deadline(run: FaultRun) -> None:
    slow = lambda: [reply(LONG, delay_s=0.5)]  # noqa: E731 - 14 tokens at 0.5 s: 7 s > the 3 s deadline
    run.both("slow tokens past the request deadline", TIMEOUT, TIMEOUT_EVENT, script=slow)
    run.both("prefill past the request deadline", TIMEOUT, TIMEOUT,
             script=lambda: [reply("late", prefill_delay_s=10)])
    run.tgi.faults(keep_alive=0.1)
    run.both("only keep-alives past the request deadline", TIMEOUT, TIMEOUT,
             script=lambda: [reply("late", prefill_delay_s=10)])
    run.tgi.faults(keep_alive=None)
    state = run.tgi.wait_state(lambda s: s["in_flight"] == 0, timeout=2)
    run.report.check(state["cancelled"] >= 6, f"past the deadline: TGI saw {state['cancelled']} of 6 requests cancelled")


SCENARIOS: dict[str, Callable[[FaultRun], None]] = {
    "generation errors (424/5xx)": scenario_generation_errors,
    "overloaded (429)": scenario_overloaded,
    "reset mid-stream": scenario_reset_mid_stream,
    "keep-alive gaps": scenario_keep_alive_gaps,
    "empty-text tokens": scenario_empty_tokens,
    "stream without final event": scenario_no_final_event,
    "slow tokens past the request deadline": scenario_past_deadline,
    "TGI down mid-run and back": scenario_down_mid_run,
}


@contextlib.contextmanager
def fault_run(report: Report) -> Iterator[FaultRun]:
    with tempfile.TemporaryDirectory(prefix="reliability-faults-") as tmp:
        yield FaultRun(report, Path(tmp))


def run_faults(report: Report, *, rounds: int = 1, names: list[str] | None = None) -> None:
    """Every scenario (or ``names``), ``rounds`` times, then TGI down at start once."""
    chosen = [name for name in SCENARIOS if names is None or name in names]
    started = time.monotonic()
    with fault_run(report) as run:
        for round_ in range(rounds):
            for name in chosen:
                with emulator_on(run.port) as tgi, start_gateway(run.gateway_args()) as gateway:
                    run.url, run.tgi = gateway.base_url, tgi
                    SCENARIOS[name](run)
                    if name == "TGI down mid-run and back":
                        with emulator_on(run.port) as back:
                            run.tgi = back
                            run.served_normally(name)
                    else:
                        run.served_normally(name)
                    _no_unexpected_errors(gateway.logs(), report, name)
        if names is None or "TGI down at start" in names:
            scenario_down_at_start(run)
    report.figures["rounds"] = rounds
    report.figures["seconds"] = round(time.monotonic() - started, 1)


def _no_unexpected_errors(logs: str, report: Report, name: str) -> None:
    bad = unexpected_errors(logs) + [line for line in logs.splitlines() if "Exception in ASGI application" in line]
    report.check(not bad, f"{name}: the gateway logged unexpected errors: {bad[:3]}")
