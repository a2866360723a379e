"""The emulator speaks TGI's protocol (shared/reference/tgi-protocol.md): real process, real HTTP."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import pytest

from tests.functionary.cases import output_cases

PROMPT = ("<|start_header_id|>user<|end_header_id|>\n\nSay hi<|eot_id|>"
          "<|start_header_id|>assistant<|end_header_id|>\n\n")
GREEDY = {"do_sample": False, "max_new_tokens": 16, "details": True, "stop": []}
HI = [
    {"text": "Hi", "id": 13347, "logprob": -0.0625},
    {"text": "!", "id": 0, "logprob": -0.3125},
    {"text": "<|eot_id|>", "special": True, "id": 128009, "logprob": -0.00390625},
]


async def post(base: str, path: str, body, *, headers=None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        if isinstance(body, (bytes, str)):
            return await http.post(path, content=body, headers=headers or {"content-type": "application/json"})
        return await http.post(path, json=body, headers=headers)


def events_of(raw: bytes, prefix: bytes = b"data: ") -> list[dict]:
    assert raw.endswith(b"\n\n")
    out = []
    for block in raw[:-2].split(b"\n\n"):
        if block == b":":
            continue
        assert block.startswith(prefix), block
        out.append(json.loads(block[len(prefix):]))
    return out


async def stream(base: str, body, path: str = "/generate_stream") -> tuple[httpx.Response, bytes]:
    response = await post(base, path, body)
    return response, response.content


async def input_length(base: str, text: str) -> int:
    return len((await post(base, "/tokenize", {"inputs": text})).json())


# ---------------------------------------------------------------------------------------------- framing


async def test_stream_bytes_match_tgi(emulator):
    emulator.script([{"tokens": HI}])
    response, raw = await stream(emulator.base_url, {"inputs": PROMPT, "parameters": GREEDY})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert response.headers["x-compute-characters"] == str(len(PROMPT))
    n = await input_length(emulator.base_url, PROMPT)
    assert raw == (
        b'data: {"index":1,"token":{"id":13347,"text":"Hi","logprob":-0.0625,"special":false},'
        b'"generated_text":null,"details":null}\n\n'
        b'data: {"index":2,"token":{"id":0,"text":"!","logprob":-0.3125,"special":false},'
        b'"generated_text":null,"details":null}\n\n'
        b'data: {"index":3,"token":{"id":128009,"text":"<|eot_id|>","logprob":-0.00390625,"special":true},'
        b'"generated_text":"Hi!","details":{"finish_reason":"eos_token","generated_tokens":3,"seed":null,'
        b'"input_length":' + str(n).encode() + b"}}\n\n"
    )


async def test_legacy_framing_and_details_off(emulator):
    emulator.faults(legacy_sse=True)
    emulator.script([{"tokens": HI}])
    _, raw = await stream(emulator.base_url, {"inputs": PROMPT, "parameters": {"max_new_tokens": 5}})
    assert raw.startswith(b'data:{"index":1,')
    events = events_of(raw, b"data:")
    assert events[-1]["details"] is None and events[-1]["generated_text"] == "Hi!"


async def test_generate_non_stream_details(emulator):
    emulator.script([{"tokens": HI}])
    response = await post(emulator.base_url, "/generate", {"inputs": PROMPT, "parameters": GREEDY})
    assert response.status_code == 200
    assert response.content == (
        b'{"generated_text":"Hi!","details":{"finish_reason":"eos_token","generated_tokens":3,"seed":null,'
        b'"prefill":[],"tokens":[{"id":13347,"text":"Hi","logprob":-0.0625,"special":false},'
        b'{"id":0,"text":"!","logprob":-0.3125,"special":false},'
        b'{"id":128009,"text":"<|eot_id|>","logprob":-0.00390625,"special":true}]}}'
    )
    assert response.headers["x-generated-tokens"] == "3"
    assert response.headers["x-prompt-tokens"] == str(await input_length(emulator.base_url, PROMPT))


async def test_seed_reported_only_when_sampling(emulator):
    emulator.script([{"text": "a<|eot_id|>"}] * 3)
    base = emulator.base_url
    sampled = await post(base, "/generate", {"inputs": "x", "parameters": {"do_sample": True, "details": True}})
    seeded = await post(base, "/generate", {"inputs": "x", "parameters": {"temperature": 0.5, "seed": 42,
                                                                          "details": True}})
    no_params = await post(base, "/generate", {"inputs": "x"})  # sampling on, but no details asked
    assert isinstance(sampled.json()["details"]["seed"], int)
    assert seeded.json()["details"]["seed"] == 42
    assert "details" not in no_params.json()


async def test_compat_route_list_and_full_text(emulator):
    emulator.script([{"text": " there<|eot_id|>"}] * 2)
    plain = await post(emulator.base_url, "/", {"inputs": "Hello", "parameters": {"max_new_tokens": 5}})
    assert plain.json() == [{"generated_text": "Hello there"}]  # return_full_text defaults to true on "/"
    _, raw = await stream(emulator.base_url, {"inputs": "Hello", "parameters": {"return_full_text": False},
                                              "stream": True}, path="/")
    assert events_of(raw)[-1]["generated_text"] == " there"


async def test_top_n_tokens(emulator):
    emulator.script([{"tokens": HI}] * 2)
    params = {**GREEDY, "top_n_tokens": 2}
    _, raw = await stream(emulator.base_url, {"inputs": PROMPT, "parameters": params})
    events = events_of(raw)
    assert list(events[0]) == ["index", "token", "top_tokens", "generated_text", "details"]
    assert events[0]["top_tokens"][0] == events[0]["token"] and len(events[0]["top_tokens"]) == 2
    body = (await post(emulator.base_url, "/generate", {"inputs": PROMPT, "parameters": params})).json()
    assert len(body["details"]["top_tokens"]) == 3


# ---------------------------------------------------------------------------------------------- stopping


async def test_special_tokens_out_of_generated_text_eos_last(emulator):
    emulator.script([{"text": "<|python_tag|>code<|eom_id|>tail"}])
    _, raw = await stream(emulator.base_url, {"inputs": PROMPT, "parameters": GREEDY})
    events = events_of(raw)
    assert [e["token"]["text"] for e in events] == ["<|python_tag|>", "code", "<|eom_id|>"]
    assert events[-1]["token"]["special"] and events[-1]["generated_text"] == "code"
    assert events[-1]["details"]["finish_reason"] == "eos_token"
    assert events[-1]["details"]["generated_tokens"] == 3


async def test_stop_sequence_untrimmed(emulator):
    emulator.script([{"text": "Hello world. Bye<|eot_id|>"}])
    params = {**GREEDY, "stop": [" world", "never"]}
    events = events_of((await stream(emulator.base_url, {"inputs": "x", "parameters": params}))[1])
    assert events[-1]["token"]["text"] == " world"
    assert events[-1]["generated_text"] == "Hello world"
    assert events[-1]["details"]["finish_reason"] == "stop_sequence"


async def test_length_and_eos_on_the_limit(emulator):
    emulator.script([{"text": "one two three<|eot_id|>"}, {"tokens": HI}])
    events = events_of((await stream(emulator.base_url, {"inputs": "x", "parameters": {
        **GREEDY, "max_new_tokens": 2}}))[1])
    assert [e["token"]["text"] for e in events] == ["one", " two"]
    assert events[-1]["details"]["finish_reason"] == "length"
    events = events_of((await stream(emulator.base_url, {"inputs": "x", "parameters": {
        **GREEDY, "max_new_tokens": 3}}))[1])
    assert events[-1]["token"] == {"id": 128009, "text": "<|eot_id|>", "logprob": -0.00390625, "special": True}
    assert events[-1]["details"] == {"finish_reason": "length", "generated_tokens": 3, "seed": None,
                                     "input_length": await input_length(emulator.base_url, "x")}


def _tokens(*texts: str) -> list[dict]:
    return [{"text": text, "special": text.startswith("<|")} for text in texts]


async def _finish(emulator, tokens: list[dict], stop: list[str], **parameters) -> tuple[str, list[str]]:
    emulator.script([{"tokens": tokens}])
    events = events_of((await stream(emulator.base_url, {"inputs": "x", "parameters": {
        **GREEDY, "stop": stop, **parameters}}))[1])
    return events[-1]["details"]["finish_reason"], [e["token"]["text"] for e in events]


# tgi-protocol.md §14: after each token, in order: max_new_tokens -> length; the EOS -> eos_token; then each stop
# as the regex re.escape(stop) + "$" searched in the token texts so far (special tokens' text included).
@pytest.mark.parametrize(
    "tokens, stop, finish, sent",
    [
        # a stop only fires when the output ENDS with it at a token boundary
        (("The", " city", " Istanbul", " is", "<|eot_id|>"), ["Istan"], "eos_token", 5),
        (("The", " city", " Istanbul", " is", "<|eot_id|>"), ["tanbul"], "stop_sequence", 3),
        (("Hel", "lo", " there", "<|eot_id|>"), ["Hello"], "stop_sequence", 2),  # across tokens, ending here
        # one that a later token runs past never fires: ">>" + ">get_time"
        ((">>", ">get_time", "\n", "{}", "<|eot_id|>"), [">>>"], "eos_token", 5),
        # markup counts: the v3.2 recipient line "all\n"; a special token's text
        (("all", "\n", "Hello", "<|eot_id|>"), ["\n"], "stop_sequence", 2),
        (("<|python_tag|>", "code", "<|eot_id|>"), ["<|python_tag|>"], "stop_sequence", 1),
        # EOS is checked before the stop strings: a stop equal to the EOS text ends with eos_token
        (("Hi", "<|eot_id|>"), ["<|eot_id|>"], "eos_token", 2),
        # Python's "$" also matches just before one final "\n"
        (("abc\n", "more", "<|eot_id|>"), ["abc"], "stop_sequence", 1),
    ],
)
async def test_stopping_as_tgi(emulator, tokens, stop, finish, sent):
    reason, texts = await _finish(emulator, _tokens(*tokens), stop)
    assert (reason, texts) == (finish, list(tokens[:sent]))


async def test_length_is_checked_before_eos_and_stop(emulator):
    reason, texts = await _finish(emulator, _tokens("Hi", " world", "<|eot_id|>"), [" world"], max_new_tokens=2)
    assert (reason, texts) == ("length", ["Hi", " world"])
    reason, texts = await _finish(emulator, _tokens("Hi", "<|eot_id|>"), [], max_new_tokens=2)
    assert (reason, texts) == ("length", ["Hi", "<|eot_id|>"])


async def test_stop_text_stays_in_stream_and_generated_text(emulator):
    emulator.script([{"tokens": _tokens("get_weather", "\n", "{}", "<|eot_id|>")}])
    events = events_of((await stream(emulator.base_url, {"inputs": "x", "parameters": {
        **GREEDY, "stop": ["\n"]}}))[1])
    assert events[-1]["token"]["text"] == "\n" and events[-1]["generated_text"] == "get_weather\n"


# ---------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "parameters, message",
    [
        ({"temperature": 0}, "`temperature` must be strictly positive"),
        ({"top_p": 1.0}, "`top_p` must be > 0.0 and < 1.0"),
        ({"top_k": 0}, "`top_k` must be strictly positive"),
        ({"max_new_tokens": 0}, "`max_new_tokens` must be strictly positive"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "`stop` supports up to 4 stop sequences. Given: 5"),
        ({"top_n_tokens": 6}, "`top_n_tokens` must be >= 0 and <= 5. Given: 6"),
        ({"grammar": {"type": "json", "value": {"type": "array"}}},
         "grammar is not valid: Grammar must have a 'properties' field"),
    ],
)
async def test_validation_errors(emulator, parameters, message):
    body = {"inputs": "x", "parameters": parameters}
    response = await post(emulator.base_url, "/generate", body)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "Input validation error: " + message, "error_type": "validation"}
    response, raw = await stream(emulator.base_url, body)
    assert response.status_code == 200
    assert raw == b"data: " + json.dumps(
        {"error": "Input validation error: " + message, "error_type": "validation"},
        separators=(",", ":")).encode() + b"\n\n"


async def test_too_long_input(emulator):
    # The shared emulator runs with --max-total-tokens 4096 --max-input-tokens 3000.
    text = "hello" + " word" * 3100
    n = await input_length(emulator.base_url, text)
    response = await post(emulator.base_url, "/generate", {"inputs": text, "parameters": {"max_new_tokens": 5000}})
    assert response.status_code == 422
    assert response.json()["error"] == (  # 3.1.1+ checks (and reports) one 1024-token chunk
        f"Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. Given: {n} `inputs` tokens "
        "and 1024 `max_new_tokens`")
    text = "hello" + " word" * 3050  # under max_total_tokens but over max_input_tokens
    n = await input_length(emulator.base_url, text)
    response = await post(emulator.base_url, "/generate", {"inputs": text, "parameters": {"max_new_tokens": 1}})
    assert response.json()["error"] == f"Input validation error: `inputs` must have less than 3000 tokens. Given: {n}"
    response = await post(emulator.base_url, "/generate", {"inputs": "x", "parameters": {"max_new_tokens": 5000}})
    assert response.status_code == 200  # 2 + 1024 fits


@pytest.mark.parametrize(
    "body, headers, status, text",
    [
        ('{"inputs":"x","parameters":{"do_sample":null}}', None, 422,
         "Failed to deserialize the JSON body into the target type: parameters.do_sample: invalid type: null, "
         "expected a boolean"),
        ('{"inputs":"x","parameters":{"stop":null}}', None, 422,
         "Failed to deserialize the JSON body into the target type: parameters.stop: invalid type: null, "
         "expected a sequence"),
        ('{"inputs":"x","parameters":{"max_new_tokens":-1}}', None, 422,
         "Failed to deserialize the JSON body into the target type: parameters.max_new_tokens: invalid value: "
         "integer `-1`, expected u32"),
        ('{"parameters":{}}', None, 422, "Failed to deserialize the JSON body into the target type: missing field "
                                         "`inputs`"),
        ('{"inputs":"x",', None, 400, None),
        ('{"inputs":"x"}', {"content-type": "text/plain"}, 415,
         "Expected request with `Content-Type: application/json`"),
        ('{"inputs":"' + "x" * 2_000_001 + '"}', None, 413, "Failed to buffer the request body: length limit exceeded"),
    ],
)
async def test_body_rejections_are_text_plain(emulator, body, headers, status, text):
    for path in ("/generate", "/generate_stream"):
        response = await post(emulator.base_url, path, body, headers=headers)
        assert response.status_code == status
        assert response.headers["content-type"].startswith("text/plain")
        if text is None:
            assert response.text.startswith("Failed to parse the request body as JSON: ")
        else:
            assert response.text == text


async def test_null_is_fine_for_option_fields(emulator):
    response = await post(emulator.base_url, "/generate", {"inputs": "x", "parameters": {
        "temperature": None, "top_p": None, "max_new_tokens": 3, "grammar": None, "unknown_key": 1}})
    assert response.status_code == 200


async def test_grammar_disabled(start_emulator):
    tgi = start_emulator(disable_grammar_support=True)
    response = await post(tgi.base_url, "/generate", {"inputs": "x", "parameters": {
        "grammar": {"type": "json", "value": {"properties": {}}}}})
    assert response.json()["error"] == "Input validation error: grammar is not supported"


# ---------------------------------------------------------------------------------------------- faults


async def test_overload(emulator):
    emulator.faults(overload=True)
    response = await post(emulator.base_url, "/generate", {"inputs": "x", "parameters": {"max_new_tokens": 2}})
    assert (response.status_code, response.json()) == (429, {"error": "Model is overloaded",
                                                             "error_type": "overloaded"})
    response, raw = await stream(emulator.base_url, {"inputs": "x", "parameters": {"max_new_tokens": 2}})
    assert response.status_code == 200
    assert raw == b'data: {"error":"Model is overloaded","error_type":"overloaded"}\n\n'


async def test_concurrency_limit_and_disconnect_observed(emulator):
    emulator.faults(max_concurrent_requests=1)
    emulator.script([{"text": "a b c<|eot_id|>", "delay_s": 5}])
    async with httpx.AsyncClient(base_url=emulator.base_url, timeout=10) as http:
        request = http.build_request("POST", "/generate_stream", json={"inputs": "x", "parameters": GREEDY})
        response = await http.send(request, stream=True)
        assert emulator.wait_state(lambda s: s["in_flight"] == 1)["in_flight"] == 1
        second = await post(emulator.base_url, "/generate", {"inputs": "x", "parameters": GREEDY})
        assert second.status_code == 429
        closed_at = time.monotonic()
        await response.aclose()  # a client going away while the next token is 5 s off
    state = emulator.wait_state(lambda s: s["cancelled"] == 1)
    assert state["cancelled"] == 1 and state["in_flight"] == 0
    assert time.monotonic() - closed_at < 0.5
    assert emulator.requests()[0]["outcome"] == "cancelled"


async def test_keep_alive_comment_during_a_slow_token(emulator):
    emulator.faults(keep_alive=0.05)
    emulator.script([{"tokens": [{"text": "Hi"}, {"text": "<|eot_id|>", "special": True, "delay_s": 0.3}]}])
    _, raw = await stream(emulator.base_url, {"inputs": "x", "parameters": GREEDY})
    first, rest = raw.split(b"\n\n", 1)
    assert rest.startswith(b":\n\n:\n\n")
    assert len(events_of(raw)) == 2


async def test_empty_text_token_for_split_utf8(emulator):
    emulator.faults(split_utf8=True)
    emulator.script([{"text": "24°C<|eot_id|>"}])
    events = events_of((await stream(emulator.base_url, {"inputs": "x", "parameters": GREEDY}))[1])
    assert [e["token"]["text"] for e in events] == ["24", "", "°", "C", "<|eot_id|>"]
    assert events[-1]["generated_text"] == "24°C" and events[-1]["details"]["generated_tokens"] == 5


async def test_mid_stream_generation_error(emulator):
    emulator.script([{"text": "a b c d<|eot_id|>", "fail_after": 2}, {"text": "a b c d", "fail_after": 2}])
    events = events_of((await stream(emulator.base_url, {"inputs": "x", "parameters": GREEDY}))[1])
    assert [e.get("error_type") for e in events] == [None, None, "generation"]
    assert events[-1]["error"].startswith("Request failed during generation: ")
    response = await post(emulator.base_url, "/generate", {"inputs": "x", "parameters": GREEDY})
    assert response.status_code == 424 and response.json()["error_type"] == "generation"


async def test_incomplete_generation(emulator):
    emulator.faults(incomplete_after=1)
    events = events_of((await stream(emulator.base_url, {"inputs": "x", "parameters": GREEDY}))[1])
    assert events[-1] == {"error": "Incomplete generation stream", "error_type": "incomplete_generation_stream"}
    response = await post(emulator.base_url, "/generate", {"inputs": "x", "parameters": GREEDY})
    assert (response.status_code, response.json()["error_type"]) == (500, "incomplete_generation")


async def test_stream_cut_without_final_event(emulator):
    emulator.faults(cut_after=2)
    response, raw = await stream(emulator.base_url, {"inputs": "x", "parameters": GREEDY})
    events = events_of(raw)
    assert len(events) == 2 and all(e["generated_text"] is None and "error" not in e for e in events)
    assert emulator.requests()[0]["outcome"] == "cut"


async def test_connection_reset_mid_stream(emulator):
    emulator.script([{"text": "a b c<|eot_id|>", "reset_after": 1}])
    async with httpx.AsyncClient(base_url=emulator.base_url, timeout=5) as http:
        async with http.stream("POST", "/generate_stream", json={"inputs": "x", "parameters": GREEDY}) as r:
            assert r.status_code == 200
            with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
                async for _ in r.aiter_raw():
                    pass


async def test_scripted_error_and_unhealthy(emulator):
    emulator.script([{"error": {"error": "Template error: boom", "error_type": "template_error"}}])
    response = await post(emulator.base_url, "/generate", {"inputs": "x", "parameters": GREEDY})
    assert (response.status_code, response.json()["error_type"]) == (422, "template_error")
    emulator.faults(unhealthy=True)
    async with httpx.AsyncClient() as http:
        health = await http.get(emulator.base_url + "/health")
    assert (health.status_code, health.json()) == (503, {"error": "unhealthy", "error_type": "healthcheck"})


# ---------------------------------------------------------------------------------------------- start-up


async def test_startup_delay_keeps_the_port_closed(start_emulator):
    started = time.monotonic()
    tgi = start_emulator(startup_delay=0.6, wait=False)
    await asyncio.sleep(0.2)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", tgi.port), timeout=0.5).close()
    tgi.wait_healthy()
    assert time.monotonic() - started >= 0.6
    logs = tgi.logs()
    assert "Starting shard" in logs and logs.index("Starting shard") < logs.index("Connected")


def test_crash_on_start(start_emulator):
    tgi = start_emulator(crash_on_start=3, wait=False, json_output=True)
    assert tgi.process.wait(timeout=10) == 3
    lines = [json.loads(line) for line in tgi.logs().splitlines() if line.startswith("{")]
    messages = [line["fields"]["message"] for line in lines]
    assert messages[0].startswith("Args { model_id: ")
    assert "Shard 0 failed to start" in messages
    assert any(line["level"] == "ERROR" for line in lines)


async def test_info_tokenize_and_ignored_launcher_flags(start_emulator):
    tgi = start_emulator(model_id="/data", max_input_length=2000, max_total_tokens=4096,
                         extra_args=["--cuda-graphs", "0", "--speculate", "2", "--sharded", "false"])
    async with httpx.AsyncClient(base_url=tgi.base_url) as http:
        info = (await http.get("/info")).json()
        legacy = await http.get("/nope")
    assert list(info) == ["model_id", "model_sha", "model_pipeline_tag", "max_concurrent_requests", "max_best_of",
                          "max_stop_sequences", "max_input_tokens", "max_total_tokens", "validation_workers",
                          "max_client_batch_size", "router", "version", "sha", "docker_label"]
    assert (info["model_id"], info["max_input_tokens"], info["max_total_tokens"]) == ("/data", 2000, 4096)
    assert legacy.status_code == 404
    tokens = (await post(tgi.base_url, "/tokenize", {"inputs": "Hi <|eot_id|>"})).json()
    assert tokens == [
        {"id": 128000, "text": "<|begin_of_text|>", "start": 0, "stop": 0},
        {"id": tokens[1]["id"], "text": "Hi", "start": 0, "stop": 2},
        {"id": tokens[2]["id"], "text": " ", "start": 2, "stop": 3},
        {"id": 128009, "text": "<|eot_id|>", "start": 3, "stop": 13},
    ]


async def test_old_tgi_version(start_emulator):
    tgi = start_emulator(tgi_version="2.0.4")
    async with httpx.AsyncClient(base_url=tgi.base_url) as http:
        info = (await http.get("/info")).json()
    assert "max_input_length" in info and "max_input_tokens" not in info
    _, raw = await stream(tgi.base_url, {"inputs": "x", "parameters": GREEDY})
    assert raw.startswith(b"data:{") and "input_length" not in events_of(raw, b"data:")[-1]["details"]


# ---------------------------------------------------------------------------------------------- replies


async def test_script_file_then_demo(start_emulator, tmp_path):
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"replies": [{"text": "scripted<|eot_id|>"}]}))
    tgi = start_emulator(script=str(script))
    first = await post(tgi.base_url, "/generate", {"inputs": PROMPT, "parameters": GREEDY})
    second = await post(tgi.base_url, "/generate", {"inputs": PROMPT, "parameters": GREEDY})
    assert first.json()["generated_text"] == "scripted"
    assert second.json()["generated_text"] == "Hello! How can I help you today?"
    assert [r["body"]["inputs"] for r in tgi.requests()] == [PROMPT, PROMPT]


async def test_script_reply_cut_at_max_new_tokens_is_consumed(emulator):
    emulator.script([{"text": "one two three four"}, {"text": "next<|eot_id|>"}])
    first = await post(emulator.base_url, "/generate", {"inputs": "x", "parameters": {"max_new_tokens": 2}})
    second = await post(emulator.base_url, "/generate", {"inputs": "x", "parameters": {"max_new_tokens": 2}})
    assert first.json()["generated_text"] == "one two" and second.json()["generated_text"] == "next"


async def test_bad_script_is_refused(emulator):
    with pytest.raises(RuntimeError, match="400"):
        emulator.script([{"tokens": [{"txt": "x"}]}])
    with pytest.raises(RuntimeError, match="unknown fault switch"):
        emulator.faults(token_dealy=1)


def _case(version: str, label: str) -> dict:
    return next(c for c in output_cases() if c["template_version"] == version and c["label"] == label)


@pytest.mark.parametrize(
    "version, label, starts, ends, finish, stop",
    [
        ("v3.llama3", "one_call", "get_current_weather\n{", "<|eot_id|>", "eos_token", []),
        ("v3.llama3", "tool_choice_named_one", '{"location": ', "<|eot_id|>", "eos_token", []),
        ("v2.llama3", "one_call", "<|reserved_special_token_249|>get_current_weather\n", "<|eot_id|>", "eos_token",
         []),
        ("v2", "one_call", "get_current_weather\n<|content|>{", "<|stop|>", "stop_sequence", ["<|stop|>"]),
        ("v3-llama3.1", "one_call", '<function=get_current_weather>{"', "<|eom_id|>", "eos_token", []),
        ("v3-llama3.1", "tool_choice_required_one", "get_current_weather>{", "<|eom_id|>", "eos_token", []),
        ("qwen2.5-text-only", "one_call", '<tool_call>\n{"name": "get_current_weather", "arguments": {',
         "<|im_end|>", "eos_token", []),
        ("gemma3", "tool_choice_named_one", '": {"location": ', "<end_of_turn>", "eos_token", []),
        ("r1", "one_call", "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function", "<｜end▁of▁sentence｜>",
         "eos_token", []),
        ("v3.llama3", "text_plain_no_tools", "Hello!", "<|eot_id|>", "eos_token", []),
        ("v1", "text_plain_auto", "\nHello!", "<|END_OF_ASSISTANT|>", "stop_sequence", ["<|END_OF_ASSISTANT|>"]),
    ],
)
async def test_demo_replies(emulator, version, label, starts, ends, finish, stop):
    prompt = _case(version, label)["expected_prompt"]
    events = events_of((await stream(emulator.base_url, {"inputs": prompt, "parameters": {
        "do_sample": False, "max_new_tokens": 200, "details": True, "stop": stop}}))[1])
    raw = "".join(e["token"]["text"] for e in events)
    assert raw.startswith(starts) and raw.endswith(ends), raw
    assert events[-1]["token"]["special"] and events[-1]["details"]["finish_reason"] == finish
    assert all(len(e["token"]["text"]) <= 12 or e["token"]["special"] for e in events)  # word-like pieces
    if "arguments" in starts or "{" in starts:
        body = raw[raw.index("{", len(starts) - 1 if starts.endswith("{") else 0):]
        assert "location" in body
