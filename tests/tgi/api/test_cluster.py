"""A gateway in front of several real emulator processes: endpoint sources, the same-model start-up
check, endpoints joining late, the in-flight limit, and emulators killed and restarted under load
(the official openai client): no request is lost that could have been retried."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from server_tgi import settings_from_args
from tests.support.gateway_proc import start_gateway
from tests.support.emulator_proc import EmulatorHandle, free_port, start_emulator

USER = [{"role": "user", "content": "Weather in Istanbul?"}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


def emulator_at(port: int, **switches) -> contextlib.AbstractContextManager[EmulatorHandle]:
    """An emulator on a given port (so that it can be killed and started again at the same address)."""
    return start_emulator(port=port, **switches)


def gateway_args(model_dirs, *endpoints: str, extra: tuple[str, ...] = (), grammar: str = "off") -> list[str]:
    """Grammars off by default: one TGI request per completion, so scripts and counts are exact."""
    args = ["--model", str(model_dirs("v3.llama3")), "--prompt-template", "v3.llama3", "--no-launch",
            "--served-model-name", "functionary", "--startup-timeout", "5", "--grammar", grammar]
    for url in endpoints:
        args += ["--endpoint", url]
    return [*args, *extra]


def endpoint_series(gw, name: str) -> dict[str, float]:
    text = httpx.get(gw.base_url + "/metrics").text
    return {m.group(1): float(m.group(2)) for m in re.finditer(rf'^{name}{{endpoint="([^"]+)"}} (\S+)$', text, re.M)}


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------- start-up


def test_endpoint_sources(tmp_path, monkeypatch) -> None:
    listing = tmp_path / "endpoints.txt"
    listing.write_text("# the cluster\nhttp://10.0.0.1:8080/\n\n  http://10.0.0.2:8080  # rack 2\n")
    monkeypatch.setenv("FUNCTIONARY_TGI_ENDPOINTS", "http://env-a:80, http://env-b:80,")
    settings = settings_from_args(["--model", "m", "--endpoint", "http://10.0.0.9:80",
                                   "--endpoints-file", str(listing)])
    assert settings.endpoints == ("http://10.0.0.9:80", "http://10.0.0.1:8080", "http://10.0.0.2:8080")
    assert settings_from_args(["--model", "m"]).endpoints == ("http://env-a:80", "http://env-b:80")
    monkeypatch.delenv("FUNCTIONARY_TGI_ENDPOINTS")
    assert settings_from_args(["--model", "m"]).endpoints == ("http://127.0.0.1:8080",)
    settings = settings_from_args(["--model", "m", "--max-in-flight-per-endpoint", "8", "--health-interval", "1"])
    assert (settings.max_in_flight_per_endpoint, settings.health_interval) == (8, 1.0)
    for bad in (["--endpoint", "10.0.0.1:8080"], ["--endpoint", "http://h:1?x=1"],
                ["--endpoints-file", str(tmp_path / "missing.txt")], ["--max-in-flight-per-endpoint", "0"],
                ["--log-format", "xml"]):
        with pytest.raises(SystemExit):
            settings_from_args(["--model", "m", *bad])


def test_start_up_refuses_endpoints_serving_different_models(model_dirs) -> None:
    with emulator_at(free_port(), model_id="org/model-a") as a, emulator_at(free_port(), model_id="org/model-b") as b:
        with start_gateway(gateway_args(model_dirs, a.base_url, b.base_url), wait=False) as gw:
            assert gw.process.wait(timeout=30) != 0
            logs = gw.logs()
    assert "serve different models" in logs and "Traceback" not in logs
    for part in (a.base_url, b.base_url, "org/model-a", "org/model-b"):
        assert part in logs


def test_endpoints_file_and_endpoints_joining_late(model_dirs, tmp_path) -> None:
    port_b, port_c = free_port(), free_port()
    with emulator_at(free_port(), demo=True) as a:
        b_url, c_url = f"http://127.0.0.1:{port_b}", f"http://127.0.0.1:{port_c}"
        listing = tmp_path / "endpoints.txt"
        listing.write_text(f"{a.base_url}\n{b_url}\n{c_url}\n")
        args = gateway_args(model_dirs, extra=("--endpoints-file", str(listing), "--health-interval", "0.1"))
        with start_gateway(args) as gw:
            client = OpenAI(base_url=gw.base_url + "/v1", api_key="unused", max_retries=0)
            states = {s["url"]: s for s in httpx.get(gw.base_url + "/health").json()["tgi"]["endpoints"]}
            assert [states[u]["admitted"] for u in (a.base_url, b_url, c_url)] == [True, False, False]
            assert client.chat.completions.create(model="functionary", messages=USER, tools=[WEATHER]).choices
            with emulator_at(port_b, demo=True) as b, emulator_at(port_c, demo=True, model_id="someone/else"):
                wait_until(lambda: endpoint_series(gw, "functionary_endpoint_healthy")[b_url] == 1)
                # Sequential requests tie on in-flight counts and ties are broken at random: B gets one of 40
                # unless it was never admitted (a chance of 2**-40 otherwise).
                for _ in range(40):
                    client.chat.completions.create(model="functionary", messages=USER, tools=[WEATHER])
                    if b.requests():
                        break
                assert b.requests()
                states = {s["url"]: s for s in httpx.get(gw.base_url + "/health").json()["tgi"]["endpoints"]}
                assert states[c_url]["healthy"] and not states[c_url]["admitted"]
                assert states[c_url]["serves_other_model"] == "someone/else"
                assert endpoint_series(gw, "functionary_endpoint_attempts_total")[c_url] == 0
            logs = gw.logs()
    assert f"endpoint {c_url} serves 'someone/else'" in logs


def test_in_flight_limit_per_endpoint(model_dirs) -> None:
    with emulator_at(free_port(), demo=True, token_delay=0.05) as a, \
            emulator_at(free_port(), demo=True, token_delay=0.05) as b:
        extra = ("--max-in-flight-per-endpoint", "1", "--queue-timeout", "5")
        with start_gateway(gateway_args(model_dirs, a.base_url, b.base_url, extra=extra)) as gw:

            async def load() -> list:
                client = AsyncOpenAI(base_url=gw.base_url + "/v1", api_key="unused", max_retries=0)
                return await asyncio.gather(*(client.chat.completions.create(
                    model="functionary", messages=USER, tools=[WEATHER]) for _ in range(4)))

            peak = {a.base_url: 0, b.base_url: 0}

            async def watch(task) -> None:
                while not task.done():
                    now = await asyncio.to_thread(endpoint_series, gw, "functionary_endpoint_in_flight")
                    for url, n in now.items():
                        peak[url] = max(peak[url], n)
                    await asyncio.sleep(0.02)

            async def main() -> list:
                task = asyncio.ensure_future(load())
                await watch(task)
                return await task

            replies = asyncio.run(main())
            assert all(r.choices[0].message.tool_calls for r in replies)
            assert peak == {a.base_url: 1, b.base_url: 1}
            assert len(a.requests()) == len(b.requests()) == 2
        extra = ("--max-in-flight-per-endpoint", "1", "--queue-timeout", "0.2")
        with start_gateway(gateway_args(model_dirs, a.base_url, extra=extra)) as gw:

            async def crowd() -> list:
                client = AsyncOpenAI(base_url=gw.base_url + "/v1", api_key="unused", max_retries=0)
                return await asyncio.gather(*(client.chat.completions.create(
                    model="functionary", messages=USER, tools=[WEATHER]) for _ in range(3)), return_exceptions=True)

            results = asyncio.run(crowd())
            refused = [r for r in results if isinstance(r, Exception)]
            assert refused and all(isinstance(r, openai.RateLimitError) for r in refused)
            assert "limit of 1" in refused[0].message


# ---------------------------------------------------------------------------------------------- under load


async def _worker(client: AsyncOpenAI, stop_at: float, stream: bool, outcomes: list) -> None:
    while time.monotonic() < stop_at:
        got_output = False
        try:
            if stream:
                chunks = await client.chat.completions.create(model="functionary", messages=USER, tools=[WEATHER],
                                                              stream=True)
                async for chunk in chunks:
                    if chunk.choices and (chunk.choices[0].delta.tool_calls or chunk.choices[0].delta.content):
                        got_output = True
            else:
                reply = await client.chat.completions.create(model="functionary", messages=USER, tools=[WEATHER])
                assert reply.choices[0].message.tool_calls
            outcomes.append(("ok", stream))
        except openai.APIError as exc:
            outcomes.append(("after_output" if got_output else "before_output", stream, repr(exc)))


@pytest.mark.parametrize("grammar", ["off", "on"])  # on: every tool request carries the whole-turn regex
def test_emulators_killed_and_restarted_under_load(model_dirs, grammar) -> None:
    ports = [free_port() for _ in range(3)]
    switches = {"demo": True, "token_delay": 0.02}
    with contextlib.ExitStack() as stack:
        a, b, c = (stack.enter_context(emulator_at(p, **switches)) for p in ports)
        urls = [e.base_url for e in (a, b, c)]
        extra = ("--health-interval", "0.2", "--eject-after", "2")
        gw = stack.enter_context(start_gateway(gateway_args(model_dirs, *urls, extra=extra, grammar=grammar)))
        outcomes: list = []
        restarted: dict = {}

        async def chaos(started: float) -> None:
            async def at(t: float) -> None:
                await asyncio.sleep(max(0.0, started + t - time.monotonic()))

            await at(1.0)
            b.process.kill()  # SIGKILL: streams on it break mid-generation, new connections are refused
            await at(2.5)
            restarted["b"] = await asyncio.to_thread(lambda: stack.enter_context(emulator_at(ports[1], **switches)))
            await at(4.0)
            c.process.kill()

        async def main() -> None:
            started = time.monotonic()
            client = AsyncOpenAI(base_url=gw.base_url + "/v1", api_key="unused", max_retries=0, timeout=30)
            workers = [_worker(client, started + 6.0, i % 2 == 0, outcomes) for i in range(8)]
            await asyncio.gather(chaos(started), *workers)

        asyncio.run(main())
        time.sleep(0.5)  # a health round after the last kill
        ejections = endpoint_series(gw, "functionary_endpoint_ejections_total")
        healthy = endpoint_series(gw, "functionary_endpoint_healthy")
        retries = endpoint_series(gw, "functionary_endpoint_retries_total")
        after_restart = len(restarted["b"].requests())

    ok = [o for o in outcomes if o[0] == "ok"]
    lost = [o for o in outcomes if o[0] != "ok"]
    # only a stream that had already sent output to its client may fail: everything else was retried
    assert not [o for o in lost if o[0] == "before_output"], lost
    assert all(o[1] is True for o in lost), lost
    assert len(lost) <= 8, lost  # at most the streams in flight on the two killed endpoints
    assert len(ok) >= 60 and any(not o[1] for o in ok) and any(o[1] for o in ok)
    assert ejections[urls[1]] >= 1 and ejections[urls[2]] >= 1 and ejections[urls[0]] == 0
    assert healthy == {urls[0]: 1, urls[1]: 1, urls[2]: 0}  # B re-admitted after its restart, C out
    assert sum(retries.values()) >= 1
    assert after_restart >= 1  # the restarted endpoint takes traffic again


def test_stream_lost_before_any_output_is_started_over(model_dirs) -> None:
    # the endpoint dies after TGI's first token, before that token made any output (a tool name is being read)
    call = [{"text": "get_weather"}, {"text": "\n"}, {"text": '{"city": "Rome"}'},
            {"text": "<|eot_id|>", "special": True}]
    with emulator_at(free_port()) as flaky, emulator_at(free_port()) as good:
        flaky.script([{"tokens": call, "reset_after": 1}] * 8)
        good.script([{"tokens": call}] * 16)
        extra = ("--eject-after", "100", "--health-interval", "0")
        with start_gateway(gateway_args(model_dirs, flaky.base_url, good.base_url, extra=extra)) as gw:
            client = OpenAI(base_url=gw.base_url + "/v1", api_key="unused", max_retries=0)
            for _ in range(8):
                chunks = list(client.chat.completions.create(model="functionary", messages=USER, tools=[WEATHER],
                                                             stream=True))
                names = [tc.function.name for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or ()]
                assert names == ["get_weather"]
        resets = [r["outcome"] for r in flaky.requests()]
    assert resets and set(resets) == {"reset"}
