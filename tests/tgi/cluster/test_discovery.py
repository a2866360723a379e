"""DNS discovery over real emulator processes and the real pool: addresses that appear join through the
pool's admission, addresses that vanish leave it while their running generation finishes, a failed or empty
lookup changes nothing. The resolver is injected: it answers loopback addresses (127.0.0.2, 127.0.0.3) that
each hold an emulator on the same port, as the pods behind a headless Service do."""

from __future__ import annotations

import asyncio
import socket
from contextlib import AsyncExitStack, aclosing

import pytest

from tests.support.emulator_proc import free_port, start_emulator
from tgi.cluster.discovery import DnsDiscovery, parse_dns_url, resolve_addresses, urls_for
from tgi.cluster.pool import EndpointPool
from tgi.protocol.client import TGIClient

BODY = {"inputs": "Say hi", "parameters": {"max_new_tokens": 20, "details": True}}
EOT = {"text": "<|eot_id|>", "special": True}


@pytest.fixture
def pods():
    """Two emulators on the same port, at 127.0.0.2 and 127.0.0.3: ``(port, a, b)``."""
    port = free_port()
    with start_emulator(host="127.0.0.2", port=port) as a, start_emulator(host="127.0.0.3", port=port) as b:
        yield port, a, b


async def pool_over(stack: AsyncExitStack, url: str, **options) -> EndpointPool:
    """A pool (health rounds only when the test asks) over one client to ``url``, closed with ``stack``."""
    first = await stack.enter_async_context(TGIClient(url, connect_timeout=1.0))
    return await stack.enter_async_context(EndpointPool([first], health_interval=0, **options))


def generations(tgi) -> int:
    return sum(1 for r in tgi.requests() if r["route"] == "/generate_stream")


class Answers:
    """An injected resolver: answers what the test last set, or fails like a DNS outage."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = list(addresses)
        self.fail = False
        self.asked: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        if self.fail:
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return list(self.addresses)


async def text_of(events) -> str:
    return "".join([e.token.text async for e in events if not e.token.special])


async def test_addresses_join_and_leave_and_a_running_generation_finishes(pods) -> None:
    port, a, b = pods
    answers = Answers("127.0.0.2")
    async with AsyncExitStack() as stack:
        pool = await pool_over(stack, a.base_url)
        discovery = await stack.enter_async_context(DnsDiscovery(
            pool, f"http://tgi-headless.default.svc:{port}", interval=0, resolve=answers,
            initial=[a.base_url],
        ))
        assert answers.asked == [("tgi-headless.default.svc", port)] and pool.endpoints == [a.base_url]

        a.script([{"tokens": [{"text": "Slow"}, *[{"text": " word", "delay_s": 0.05}] * 10, EOT]}])
        async with aclosing(pool.generate_stream(BODY)) as running:
            head = await anext(running)
            answers.addresses = ["127.0.0.3"]  # the pod behind 127.0.0.2 is going away
            await discovery.refresh()
            assert pool.endpoints == [b.base_url]
            assert [s.admitted for s in pool.stats()] == [True]
            assert head.token.text + await text_of(running) == "Slow" + " word" * 10  # it finished on a

        async with aclosing(pool.generate_stream(BODY)) as events:
            await text_of(events)
        assert generations(b) == 1 and generations(a) == 1

        answers.addresses = ["127.0.0.3", "127.0.0.2"]  # it is back
        await discovery.refresh()
        assert sorted(pool.endpoints) == sorted([a.base_url, b.base_url])
        assert all(s.admitted for s in pool.stats())
        for _ in range(6):
            async with aclosing(pool.generate_stream(BODY)) as events:
                await text_of(events)
        assert generations(a) > 1 and generations(b) > 1

        answers.fail = True  # an outage keeps the members
        await discovery.refresh()
        answers.fail, answers.addresses = False, []  # so does an empty answer
        await discovery.refresh()
        assert sorted(pool.endpoints) == sorted([a.base_url, b.base_url])
        assert discovery.members == {a.base_url, b.base_url}


async def test_an_address_that_is_not_ready_waits_outside_until_its_health_check(pods) -> None:
    port, a, b = pods
    b.faults(unhealthy=True)  # still loading
    answers = Answers("127.0.0.2", "127.0.0.3")
    async with AsyncExitStack() as stack:
        pool = await pool_over(stack, a.base_url)
        await stack.enter_async_context(DnsDiscovery(
            pool, f"http://tgi:{port}", interval=0, resolve=answers, initial=[a.base_url]))
        assert {s.url: s.admitted for s in pool.stats()} == {a.base_url: True, b.base_url: False}
        for _ in range(3):
            async with aclosing(pool.generate_stream(BODY)) as events:
                await text_of(events)
        assert generations(b) == 0
        b.faults(unhealthy=None)
        await pool.check_once()  # the pool's own health round admits it
        assert {s.url: s.admitted for s in pool.stats()} == {a.base_url: True, b.base_url: True}


async def test_the_default_resolver_uses_the_system_resolver() -> None:
    assert "127.0.0.1" in await resolve_addresses("localhost", 80)


def test_urls_and_their_validation() -> None:
    assert urls_for("http", 80, ["10.0.0.7", "fd00::1"]) == ["http://10.0.0.7:80", "http://[fd00::1]:80"]
    assert parse_dns_url("http://tgi.ns.svc:8080") == ("http", "tgi.ns.svc", 8080)
    assert parse_dns_url("https://tgi.ns.svc") == ("https", "tgi.ns.svc", 443)
    for bad in ("tgi.ns.svc:80", "http://tgi/generate", "ftp://tgi", "http://:80"):
        with pytest.raises(ValueError):
            parse_dns_url(bad)


async def test_the_background_task_follows_dns(pods) -> None:
    port, a, b = pods
    answers = Answers("127.0.0.2")
    async with AsyncExitStack() as stack:
        pool = await pool_over(stack, a.base_url)
        await stack.enter_async_context(DnsDiscovery(
            pool, f"http://tgi:{port}", interval=0.05, resolve=answers, initial=[a.base_url]))
        answers.addresses = ["127.0.0.2", "127.0.0.3"]
        for _ in range(200):  # a few rounds of 0.05 s; bounded, not timed
            if len(pool.endpoints) == 2 and all(s.admitted for s in pool.stats()):
                break
            await asyncio.sleep(0.05)
        assert sorted(pool.endpoints) == sorted([a.base_url, b.base_url])
        answers.addresses = ["127.0.0.3"]
        for _ in range(200):
            if pool.endpoints == [b.base_url]:
                break
            await asyncio.sleep(0.05)
        assert pool.endpoints == [b.base_url]


async def test_a_removed_endpoint_is_closed_after_its_last_generation(pods) -> None:
    port, a, b = pods
    async with AsyncExitStack() as stack:
        pool = await pool_over(stack, b.base_url, eject_after=1)
        assert await pool.add_endpoint(a.base_url) and not await pool.add_endpoint(a.base_url)
        b.faults(unhealthy=True)
        await pool.check_once()  # b ejected: the next generation runs on a, over a client the pool opened
        a.script([{"tokens": [{"text": "Slow"}, *[{"text": " word", "delay_s": 0.05}] * 6, EOT]}])
        async with aclosing(pool.generate_stream(BODY)) as running:
            head = await anext(running)
            await pool.health()  # a second connection to a, idle in its client's pool afterwards
            assert await pool.remove_endpoint(a.base_url) and pool.endpoints == [b.base_url]
            assert (await asyncio.to_thread(a.state))["connections"] == 3  # stream, idle one, this query
            assert head.token.text + await text_of(running) == "Slow" + " word" * 6
        for _ in range(100):  # the pool closes a's client in a task of its own: let the loop run it
            state = await asyncio.to_thread(a.state)
            if state["connections"] == 1:
                break
            await asyncio.sleep(0.02)
        assert state["connections"] == 1 and state["completed"] == 1  # only this query's connection is left
