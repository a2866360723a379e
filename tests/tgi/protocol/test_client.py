"""TGIClient against the emulator: typed answers, every error mapped, cancellation reaching TGI."""

from __future__ import annotations

import asyncio
import time
from contextlib import aclosing
from urllib.parse import urlsplit

import pytest

from functionary.errors import GatewayError
from tests.support.emulator_proc import free_port
from tgi.protocol.client import TGIClient
from tgi.protocol.errors import (
    UpstreamContextLengthError,
    UpstreamError,
    UpstreamGenerationError,
    UpstreamOverloadedError,
    UpstreamUnavailableError,
    UpstreamValidationError,
    error_from_tgi,
)
from tgi.protocol.types import GenerateParameters, GenerateRequest, StreamResponse

GREEDY = GenerateParameters(do_sample=False, max_new_tokens=20, details=True)


def request(inputs: str = "Say hi", **parameters) -> GenerateRequest:
    return GenerateRequest(inputs=inputs, parameters=GREEDY.model_copy(update=parameters))


async def collect(client: TGIClient, req) -> list[StreamResponse]:
    async with aclosing(client.generate_stream(req)) as events:
        return [event async for event in events]


async def test_stream_generate_info_tokenize(emulator):
    emulator.script([{"text": "Hi there!<|eot_id|>"}] * 2)
    async with TGIClient(emulator.base_url) as client:
        assert await client.health()
        info = await client.info()
        assert (info.model_id, info.max_input_tokens, info.max_total_tokens) == ("emulator/functionary", 3000, 4096)
        events = await collect(client, request())
        assert [e.index for e in events] == [1, 2, 3, 4]
        assert events[-1].is_final and not events[-2].is_final
        assert events[-1].token.special and events[-1].generated_text == "Hi there!"
        assert events[-1].details.finish_reason == "eos_token" and events[-1].details.input_length > 0
        response = await client.generate({"inputs": "Say hi", "parameters": {"max_new_tokens": 5, "details": True}})
        assert response.generated_text == "Hi there!" and response.details.generated_tokens == 4
        tokens = await client.tokenize("Hi <|eot_id|>")
        assert [t.text for t in tokens] == ["<|begin_of_text|>", "Hi", " ", "<|eot_id|>"]
    sent = emulator.requests()[0]
    assert sent["body"] == {"inputs": "Say hi", "parameters": {"do_sample": False, "max_new_tokens": 20,
                                                                "details": True}}  # no nulls sent


async def test_info_of_an_old_tgi_and_legacy_framing(start_emulator):
    tgi = start_emulator(tgi_version="2.0.4", max_input_length=1000, max_total_tokens=2048)
    async with TGIClient(tgi.base_url) as client:
        assert (await client.info()).max_input_tokens == 1000
        events = await collect(client, request())
        assert events[-1].is_final and events[-1].details.input_length is None


# ---------------------------------------------------------------------------------------------- error mapping


@pytest.mark.parametrize("streaming", [True, False])
async def test_validation(emulator, streaming):
    async with TGIClient(emulator.base_url) as client:
        req = request(temperature=0.0, do_sample=True)
        with pytest.raises(UpstreamValidationError) as caught:
            await (collect(client, req) if streaming else client.generate(req))
    error = caught.value
    assert error.message == "Input validation error: `temperature` must be strictly positive"
    assert (error.status_code, error.error_type, error.param) == (400, "invalid_request_error", "temperature")
    assert (error.upstream_status, error.upstream_type) == (None if streaming else 422, "validation")


@pytest.mark.parametrize("streaming", [True, False])
async def test_context_length(emulator, streaming):
    async with TGIClient(emulator.base_url) as client:
        req = request("hi" + " word" * 3100, max_new_tokens=100)
        with pytest.raises(UpstreamContextLengthError) as caught:
            await (collect(client, req) if streaming else client.generate(req))
    assert caught.value.code == "context_length_exceeded" and caught.value.status_code == 400


@pytest.mark.parametrize("streaming", [True, False])
async def test_overloaded(emulator, streaming):
    emulator.faults(overload=True)
    async with TGIClient(emulator.base_url) as client:
        with pytest.raises(UpstreamOverloadedError) as caught:
            await (collect(client, request()) if streaming else client.generate(request()))
    assert (caught.value.status_code, caught.value.code, caught.value.error_type) == (429, "overloaded",
                                                                                     "rate_limit_error")


async def test_axum_rejections(emulator):
    async with TGIClient(emulator.base_url) as client:
        with pytest.raises(UpstreamValidationError) as caught:
            await client.generate(request(max_new_tokens=-1))
        assert caught.value.message.startswith("Failed to deserialize the JSON body into the target type: ")
        assert caught.value.upstream_status == 422
        with pytest.raises(UpstreamValidationError) as caught:
            await collect(client, request("x" * 2_000_001))
        assert (caught.value.code, caught.value.upstream_status) == ("payload_too_large", 413)


async def test_generation_error_after_tokens(emulator):
    emulator.script([{"text": "a b c d<|eot_id|>", "fail_after": 2}])
    seen = []
    async with TGIClient(emulator.base_url) as client:
        with pytest.raises(UpstreamGenerationError) as caught:
            async with aclosing(client.generate_stream(request())) as events:
                async for event in events:
                    seen.append(event.token.text)
    assert seen == ["a", " b"]
    assert (caught.value.status_code, caught.value.code) == (502, "generation_failed")
    assert caught.value.message.startswith("Request failed during generation")


@pytest.mark.parametrize("fault", ["cut_after", "incomplete_after", "reset_after"])
async def test_stream_without_final_event(emulator, fault):
    emulator.faults(**{fault: 1})
    async with TGIClient(emulator.base_url) as client:
        with pytest.raises(UpstreamGenerationError) as caught:
            await collect(client, request())
    assert caught.value.code == "incomplete_generation_stream"


async def test_unreachable(emulator):
    emulator.faults(reset_after=0)
    async with TGIClient(emulator.base_url) as client:
        with pytest.raises(UpstreamUnavailableError):  # reset before any byte of the answer
            await client.generate(request())
    async with TGIClient(f"http://127.0.0.1:{free_port()}", connect_timeout=1) as client:
        assert not await client.health()
        with pytest.raises(UpstreamUnavailableError) as caught:
            await collect(client, request())
        assert (caught.value.status_code, caught.value.retry_after) == (503, 1.0)
        with pytest.raises(UpstreamUnavailableError):
            await client.info()


async def test_api_key(start_emulator):
    tgi = start_emulator(api_key="sekret")
    async with TGIClient(tgi.base_url) as client:
        with pytest.raises(UpstreamError) as caught:
            await client.generate(request())
        assert (caught.value.code, caught.value.status_code) == ("upstream_unauthorized", 502)
    async with TGIClient(tgi.base_url, api_key="sekret") as client:
        assert (await client.generate(request())).generated_text


async def test_idle_timeout_and_keep_alives(emulator):
    emulator.script([{"text": "a<|eot_id|>", "delay_s": 0.6}] * 2)
    async with TGIClient(emulator.base_url, idle_timeout=0.3) as client:
        with pytest.raises(UpstreamGenerationError) as caught:
            await collect(client, request())
        assert caught.value.code == "upstream_timeout"
        emulator.faults(keep_alive=0.1)  # TGI's keep-alive comments keep an idle stream alive
        assert (await collect(client, request()))[-1].generated_text == "a"


# ---------------------------------------------------------------------------------------------- cancellation


async def test_consumer_stopping_early_closes_the_upstream(emulator):
    emulator.script([{"text": "a b c d e<|eot_id|>", "delay_s": 0.2}])
    async with TGIClient(emulator.base_url) as client:
        async with aclosing(client.generate_stream(request())) as events:
            async for _ in events:
                break
        stopped = time.monotonic()
        state = emulator.wait_state(lambda s: s["cancelled"] == 1)
    assert state["cancelled"] == 1 and state["in_flight"] == 0
    assert time.monotonic() - stopped < 0.5


async def test_cancelled_task_cancels_tgi_work(emulator):
    emulator.script([{"tokens": [{"text": "a"}, {"text": "b", "delay_s": 30}]}])
    async with TGIClient(emulator.base_url) as client:
        first = asyncio.Event()

        async def consume():
            async with aclosing(client.generate_stream(request())) as events:
                async for _ in events:
                    first.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(first.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        state = emulator.wait_state(lambda s: s["cancelled"] == 1)
    assert state["cancelled"] == 1 and state["in_flight"] == 0


async def test_connections_are_reused(emulator):
    emulator.script([{"text": "a<|eot_id|>"}] * 6)
    async with TGIClient(emulator.base_url) as client:
        for _ in range(3):
            await collect(client, request())
            await client.generate(request())
        assert emulator.state()["connections"] == 2  # the client's one, and the state request's own


async def _counting_proxy(target_port: int, accepted: list) -> asyncio.base_events.Server:
    """A TCP relay on 127.0.0.1 that counts the connections it accepts (what TGI would see)."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer.get_extra_info("peername"))
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    return await asyncio.start_server(relay, "127.0.0.1", 0)


@pytest.mark.parametrize("consumer", ["to_the_end", "stops_at_final"])
async def test_one_connection_for_many_streams(emulator, consumer):
    """Each stream is read through its final event and the end of its body, so the HTTP/1.1 pool keeps the connection:
    twenty streams, one TCP connection (a new one per request costs CPU on both sides and TIME-WAIT sockets)."""
    emulator.script([{"text": "a b c<|eot_id|>"}] * 20)
    accepted: list = []
    proxy = await _counting_proxy(urlsplit(emulator.base_url).port, accepted)
    port = proxy.sockets[0].getsockname()[1]
    try:
        async with TGIClient(f"http://127.0.0.1:{port}") as client:
            for _ in range(20):
                async with aclosing(client.generate_stream(request())) as events:
                    async for event in events:
                        if consumer == "stops_at_final" and event.is_final:
                            break
    finally:
        proxy.close()
    assert len(accepted) == 1


# ---------------------------------------------------------------------------------------------- error_from_tgi


@pytest.mark.parametrize(
    "status, body, cls, code",
    [
        (422, {"error": "Input validation error: `top_p` must be > 0.0 and < 1.0", "error_type": "validation"},
         UpstreamValidationError, None),
        (None, b'{"error":"Model is overloaded","error_type":"overloaded"}', UpstreamOverloadedError, "overloaded"),
        (424, {"error": "Request failed during generation: x", "error_type": "generation"}, UpstreamGenerationError,
         "generation_failed"),
        (500, {"error": "Incomplete generation", "error_type": "incomplete_generation"}, UpstreamGenerationError,
         "incomplete_generation"),
        (None, {"error": "Incomplete generation stream", "error_type": "incomplete_generation_stream"},
         UpstreamGenerationError, "incomplete_generation_stream"),
        (422, {"error": "Template error: x", "error_type": "template_error"}, UpstreamValidationError,
         "template_error"),
        (422, {"error": "Tool error: x", "error_type": "tool_error"}, UpstreamValidationError, "tool_error"),
        (422, {"error": "tokenizer error x", "error_type": "tokenizer"}, UpstreamValidationError, "tokenizer_error"),
        (503, {"error": "unhealthy", "error_type": "healthcheck"}, UpstreamUnavailableError, "service_unavailable"),
        (400, "Failed to parse the request body as JSON: EOF", UpstreamValidationError, None),
        (415, "Expected request with `Content-Type: application/json`", UpstreamValidationError,
         "unsupported_media_type"),
        (413, "Failed to buffer the request body: length limit exceeded", UpstreamValidationError, "payload_too_large"),
        (429, b"", UpstreamOverloadedError, "overloaded"),
        (502, b"<html>bad gateway</html>", UpstreamUnavailableError, "service_unavailable"),
        (504, None, UpstreamUnavailableError, "service_unavailable"),
        (401, b"", UpstreamError, "upstream_unauthorized"),
        (404, b"", UpstreamError, "upstream_not_found"),
        (500, b"oops", UpstreamGenerationError, None),
        (None, {"error": {"message": "Input validation error: x", "http_status_code": 422}}, UpstreamValidationError,
         None),
        (None, {"error": "mystery"}, UpstreamGenerationError, None),
    ],
)
def test_error_from_tgi(status, body, cls, code):
    error = error_from_tgi(status=status, body=body)
    assert type(error) is cls and isinstance(error, GatewayError)
    assert error.code == code
    assert error.message
    payload = error.to_dict()["error"]
    assert payload["type"] == cls.error_type and payload["code"] == code


def test_error_from_tgi_context_length_and_retry_after():
    error = error_from_tgi(status=422, body={
        "error": "Input validation error: `inputs` must have less than 10 tokens. Given: 12",
        "error_type": "validation"})
    assert type(error) is UpstreamContextLengthError and error.code == "context_length_exceeded"
    assert error_from_tgi(status=503, body=b"", retry_after=7).retry_after == 7
