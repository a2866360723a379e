"""EndpointPool over real emulator processes: routing, retries before the first token only, health
ejection and re-admission, the model check on re-admission, the in-flight limit."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack, aclosing, asynccontextmanager

import pytest

from tests.support.emulator_proc import free_port
from tgi.protocol.client import TGIClient
from tgi.protocol.errors import (
    UpstreamGenerationError,
    UpstreamOverloadedError,
    UpstreamUnavailableError,
    UpstreamValidationError,
)
from tgi.ops.metrics import RequestRecord
from tgi.cluster.pool import EndpointPool

EOT = {"text": "<|eot_id|>", "special": True}
WORDS = [{"text": w} for w in ("Hello", " there", ",", " friend", ".")]


def body(max_new_tokens: int = 20) -> dict:
    return {"inputs": "Say hi", "parameters": {"max_new_tokens": max_new_tokens, "details": True}}


@asynccontextmanager
async def pool_of(urls: list[str], **options):
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(TGIClient(u, connect_timeout=1.0)) for u in urls]
        options.setdefault("health_interval", 0)
        yield await stack.enter_async_context(EndpointPool(clients, **options))


async def run(pool: EndpointPool, *, record=None, buffered: bool = False) -> str:
    async with aclosing(pool.generate_stream(body(), record=record, buffered=buffered)) as events:
        return "".join([e.token.text async for e in events if not e.token.special])


def generations(tgi) -> int:
    return sum(1 for r in tgi.requests() if r["route"] == "/generate_stream")


@asynccontextmanager
async def http_503_server():
    """A real HTTP server that answers every request 503, as a proxy in front of a dead TGI does."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            payload = b'{"error":"upstream unavailable"}'
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                         b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(payload), payload))
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


# ---------------------------------------------------------------------------------------------- routing


async def test_least_outstanding_requests(start_emulator):
    a, b = start_emulator(token_delay=0.05), start_emulator(token_delay=0.05)
    async with pool_of([a.base_url, b.base_url]) as pool:
        tasks = [asyncio.create_task(run(pool)) for _ in range(6)]
        await asyncio.sleep(0.1)
        assert sorted(pool.in_flight().values()) == [3, 3]
        await asyncio.gather(*tasks)
        assert pool.in_flight() == {a.base_url: 0, b.base_url: 0}
        # a long request holds one endpoint: the next ones all go to the other
        for tgi in (a, b):
            tgi.faults(token_delay=0.0)
            tgi.script([{"tokens": WORDS * 4 + [EOT], "delay_s": 0.05}])
        long = asyncio.create_task(run(pool))
        await asyncio.sleep(0.1)
        loaded = next(url for url, n in pool.in_flight().items() if n == 1)
        other = b if loaded == a.base_url else a
        other.control("DELETE", "/emulator/script")
        for _ in range(4):
            await run(pool)
        assert pool.in_flight()[loaded] == 1
        await long
    attempts = {s.url: s.attempts for s in pool.stats()}
    assert attempts[other.base_url] - attempts[loaded] == 4 - 1 and sum(attempts.values()) == 11


async def test_in_flight_limit_queues_then_429(start_emulator):
    tgi = start_emulator()
    tgi.script([{"tokens": WORDS + [EOT], "delay_s": 0.1}] * 3)
    async with pool_of([tgi.base_url], max_in_flight=1, queue_timeout=2.0) as pool:
        started = time.monotonic()
        texts = await asyncio.gather(run(pool), run(pool), run(pool))
        assert texts == ["Hello there, friend."] * 3
        assert time.monotonic() - started >= 3 * 6 * 0.1 * 0.9  # one after the other
        assert [r["outcome"] for r in tgi.requests()] == ["ok"] * 3
    tgi.script([{"tokens": WORDS + [EOT], "delay_s": 0.2}])
    async with pool_of([tgi.base_url], max_in_flight=1, queue_timeout=0.2) as pool:
        first = asyncio.create_task(run(pool))
        await asyncio.sleep(0.05)
        with pytest.raises(UpstreamOverloadedError, match="limit of 1"):
            await run(pool)
        assert await first == "Hello there, friend."


# ---------------------------------------------------------------------------------------------- retries
# Routing between idle endpoints is random: each test sends enough requests that every path is taken.


async def test_connect_error_is_retried_and_the_dead_endpoint_ejected(start_emulator):
    live = start_emulator(demo=True)
    dead = f"http://127.0.0.1:{free_port()}"
    async with pool_of([dead, live.base_url], eject_after=2) as pool:
        records = [RequestRecord("r", "POST", "/v1/chat/completions") for _ in range(20)]
        for record in records:
            assert await run(pool, record=record)
        stats = {s.url: s for s in pool.stats()}
    assert generations(live) == 20
    assert stats[dead].attempts == 2 and stats[dead].retried == 2 and stats[dead].ejections == 1
    assert not stats[dead].admitted and stats[live.base_url].admitted
    assert sum(r.retries for r in records) == 2
    assert all(r.endpoint == live.base_url and r.first_token_at is not None for r in records)


async def test_overloaded_and_503_are_retried(start_emulator):
    busy, live = start_emulator(overload=True), start_emulator(demo=True)
    async with http_503_server() as proxy, pool_of([busy.base_url, proxy, live.base_url], eject_after=1) as pool:
        for _ in range(12):
            assert await run(pool)
        stats = {s.url: s for s in pool.stats()}
    assert generations(live) == 12
    # overloaded says nothing about the endpoint's health; a 503 does
    assert stats[busy.base_url].retried >= 1 and stats[busy.base_url].admitted
    assert stats[proxy].retried == 1 and stats[proxy].ejections == 1 and not stats[proxy].admitted


async def test_every_endpoint_failing_gives_the_last_error(start_emulator):
    a, b = start_emulator(overload=True), start_emulator(overload=True)
    async with pool_of([a.base_url, b.base_url]) as pool:
        with pytest.raises(UpstreamOverloadedError):
            await run(pool)
    assert generations(a) == generations(b) == 1
    async with pool_of([f"http://127.0.0.1:{free_port()}"]) as pool:
        with pytest.raises(UpstreamUnavailableError):
            await run(pool)


@pytest.mark.parametrize("buffered", [False, True])
async def test_connection_lost_before_the_first_token_is_retried(start_emulator, buffered):
    flaky, good = start_emulator(), start_emulator()
    flaky.script([{"tokens": WORDS + [EOT], "reset_after": 0}] * 10)
    good.script([{"tokens": WORDS + [EOT]}] * 10)
    async with pool_of([flaky.base_url, good.base_url], eject_after=100) as pool:
        for _ in range(10):
            assert await run(pool, buffered=buffered) == "Hello there, friend."
    resets = [r["outcome"] for r in flaky.requests()]
    assert resets and set(resets) == {"reset"} and generations(good) == 10


async def test_buffered_generation_survives_an_endpoint_dying_midway(start_emulator):
    flaky, good = start_emulator(), start_emulator()
    flaky.script([{"tokens": WORDS + [EOT], "reset_after": 3}] * 10)
    good.script([{"tokens": WORDS + [EOT]}] * 10)
    async with pool_of([flaky.base_url, good.base_url], eject_after=100) as pool:
        records = [RequestRecord("r", "POST", "/v1/chat/completions") for _ in range(10)]
        for record in records:
            assert await run(pool, record=record, buffered=True) == "Hello there, friend."
    assert sum(r.retries for r in records) == len(flaky.requests()) >= 1


@pytest.mark.parametrize(("fault", "buffered"), [("fail_after", False), ("reset_after", False),
                                                 ("fail_after", True), ("incomplete_after", True)])
async def test_never_retried_after_tokens_or_when_tgi_reports_the_error(start_emulator, fault, buffered):
    a, b = start_emulator(), start_emulator()
    for tgi in (a, b):
        tgi.script([{"tokens": WORDS + [EOT], fault: 2}])
    async with pool_of([a.base_url, b.base_url]) as pool:
        seen = []
        with pytest.raises(UpstreamGenerationError):
            async with aclosing(pool.generate_stream(body(), buffered=buffered)) as events:
                async for event in events:
                    seen.append(event.token.text)
        assert seen == ([] if buffered else ["Hello", " there"])
        assert generations(a) + generations(b) == 1  # the other endpoint never saw it


async def test_validation_errors_are_not_retried(start_emulator):
    a, b = start_emulator(max_total_tokens=64), start_emulator(max_total_tokens=64)
    async with pool_of([a.base_url, b.base_url]) as pool:
        with pytest.raises(UpstreamValidationError):
            async with aclosing(pool.generate_stream(body(max_new_tokens=500))) as events:
                [e async for e in events]
    assert generations(a) + generations(b) == 1


# ---------------------------------------------------------------------------------------------- health


async def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_health_checks_eject_and_readmit(start_emulator):
    a, b = start_emulator(demo=True), start_emulator(demo=True)
    async with pool_of([a.base_url, b.base_url], health_interval=0.05, eject_after=2) as pool:

        def admitted() -> dict:
            return {s.url: s.admitted for s in pool.stats()}

        a.faults(unhealthy=True)
        await wait_for(lambda: admitted()[a.base_url] is False)
        for _ in range(4):
            await run(pool)
        assert generations(a) == 0 and generations(b) == 4
        a.faults(unhealthy=None)
        await wait_for(lambda: admitted()[a.base_url] is True)
        await asyncio.gather(*(run(pool) for _ in range(6)))
        assert generations(a) >= 1
        states = {s["url"]: s for s in await pool.health()}
        assert states[a.base_url]["healthy"] and states[a.base_url]["admitted"]
        assert {s.url: s.ejections for s in pool.stats()} == {a.base_url: 1, b.base_url: 0}


async def test_all_ejected_still_tries_the_known_endpoints(start_emulator):
    tgi = start_emulator(demo=True)
    tgi.faults(unhealthy=True)  # /health fails but generation works
    async with pool_of([tgi.base_url], health_interval=0.05) as pool:
        await wait_for(lambda: not pool.stats()[0].admitted)
        assert await run(pool)


async def test_late_endpoint_joins_only_with_the_same_model(start_emulator):
    a = start_emulator(demo=True)
    port_b, port_c = free_port(), free_port()
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(TGIClient(u, connect_timeout=1.0)) for u in
                   (a.base_url, f"http://127.0.0.1:{port_b}", f"http://127.0.0.1:{port_c}")]
        reference = await clients[0].info()
        pool = await stack.enter_async_context(EndpointPool(
            clients, health_interval=0.05, reference=reference, down=[c.base_url for c in clients[1:]]))
        assert [s.admitted for s in pool.stats()] == [True, False, False]
        for _ in range(3):
            assert await run(pool)  # the down ones are not tried
        b = start_emulator(demo=True, extra_args=["--port", str(port_b)], wait=False)
        c = start_emulator(demo=True, model_id="someone/else", extra_args=["--port", str(port_c)], wait=False)
        await wait_for(lambda: pool.stats()[1].admitted, timeout=10)
        await asyncio.sleep(0.3)
        states = await pool.health()
        assert [s["admitted"] for s in states] == [True, True, False]
        assert states[2]["healthy"] and states[2]["serves_other_model"] == "someone/else"
        await asyncio.gather(*(run(pool) for _ in range(6)))
    assert b.process.poll() is None and c.process.poll() is None
    served = {s.url: s.attempts for s in pool.stats()}
    assert served[f"http://127.0.0.1:{port_b}"] >= 1 and served[f"http://127.0.0.1:{port_c}"] == 0
