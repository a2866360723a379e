"""tgi.protocol.http1 (the TGI client's HTTP/1.1 pool) against small real servers on 127.0.0.1: what the
emulator does not exercise (a pooled connection closed by the server, the pool limit, close-delimited bodies,
a base URL with a path)."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import pytest

from tgi.protocol.client import TGIClient
from tgi.protocol.errors import UpstreamUnavailableError
from tgi.protocol.http1 import HTTPPool

EVENT = b'data: {"index":1,"token":{"id":1,"text":"a","special":false},"generated_text":"a","details":null}\n\n'


async def _server(answer: bytes, *, close_after: bool, seen: list) -> asyncio.base_events.Server:
    """Answers every request on a connection with ``answer``; closes the connection after the first one when
    ``close_after``. ``seen`` gets (connection number, request line) pairs."""
    count = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        count += 1
        number = count
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                seen.append((number, head.split(b"\r\n")[0].decode()))
                writer.write(answer)
                await writer.drain()
                if close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def _chunked(*parts: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    return head + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


async def test_a_pooled_connection_the_server_closed_is_replaced():
    seen: list = []
    server = await _server(_chunked(EVENT), close_after=True, seen=seen)
    port = server.sockets[0].getsockname()[1]
    try:
        async with TGIClient(f"http://127.0.0.1:{port}/prefix") as client:
            for _ in range(3):
                async with aclosing(client.generate_stream({"inputs": "x"})) as events:
                    assert [e.generated_text async for e in events] == ["a"]
                await asyncio.sleep(0.05)  # the server's close arrives while the connection is idle in the pool
    finally:
        server.close()
    assert [line for _, line in seen] == ["POST /prefix/generate_stream HTTP/1.1"] * 3
    assert [n for n, _ in seen] == [1, 2, 3]


async def test_a_close_delimited_body():
    seen: list = []
    answer = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{"generated_text":"hi"}'
    server = await _server(answer, close_after=True, seen=seen)
    port = server.sockets[0].getsockname()[1]
    try:
        async with TGIClient(f"http://127.0.0.1:{port}") as client:
            assert (await client.generate({"inputs": "x"})).generated_text == "hi"
            assert (await client.generate({"inputs": "x"})).generated_text == "hi"
    finally:
        server.close()
    assert len(seen) == 2


async def test_the_pool_limit():
    seen: list = []
    never_ends = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n" % (len(EVENT) - 2, EVENT[:-2])
    server = await _server(never_ends, close_after=False, seen=seen)
    port = server.sockets[0].getsockname()[1]
    try:
        async with TGIClient(f"http://127.0.0.1:{port}", max_connections=1, connect_timeout=0.2) as client:
            held = client.generate_stream({"inputs": "x"})
            task = asyncio.create_task(anext(held))
            while not seen:
                await asyncio.sleep(0.01)
            with pytest.raises(UpstreamUnavailableError) as caught:
                async with aclosing(client.generate_stream({"inputs": "x"})) as events:
                    await anext(events)
            assert caught.value.code == "upstream_pool_exhausted"
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await held.aclose()
    finally:
        server.close()


async def test_a_closed_pool_refuses():
    pool = HTTPPool("http://127.0.0.1:9", connect_timeout=1, pool_timeout=1, max_connections=1, max_keepalive=1,
                    keepalive_expiry=1)
    await pool.aclose()
    with pytest.raises(Exception, match="closed"):
        await pool.request("GET", "/health", timeout=1)


async def test_a_buffered_stream_wakes_once_and_keeps_the_idle_timeout(emulator):
    """``buffered``: the same events, woken at the end; the idle timeout still runs between reads, so a slow
    answer whose tokens keep coming completes and a silent one times out."""
    from tgi.protocol.errors import UpstreamGenerationError

    slow = {"tokens": [{"text": w, "delay_s": 0.15} for w in ("a", " b", " c", " d", " e")] + [{"text": "<|eot_id|>"}]}
    emulator.script([slow, {"text": "a<|eot_id|>", "delay_s": 0.8}])
    body = {"inputs": "x", "parameters": {"details": True, "max_new_tokens": 20}}
    async with TGIClient(emulator.base_url, idle_timeout=0.5) as client:
        async with aclosing(client.generate_stream(body, buffered=True)) as events:
            got = [e async for e in events]
        assert got[-1].generated_text.startswith("a b c d e") and len(got) == 6
        with pytest.raises(UpstreamGenerationError) as caught:
            async with aclosing(client.generate_stream(body, buffered=True)) as events:
                [e async for e in events]
        assert caught.value.code == "upstream_timeout"
